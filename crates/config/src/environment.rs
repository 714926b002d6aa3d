//! The variables Laravel's `env()` sees: the process environment first, then the app's `.env`.
//!
//! Laravel loads `.env` into an immutable repository, so a variable that supervisor or systemd
//! already put in the process environment wins over the file. We mirror that, and we never write
//! the file's variables into our own process environment (that is unsound in a threaded program and
//! would leak the app's secrets into child processes).

use std::collections::HashMap;
use std::path::Path;

use super::bounded;
use super::dotenv::{self, DotenvRules};
use super::env_value::{EnvValue, interpret};
use super::error::{ConfigError, ValueOrigin};

/// Answers "what is variable X in the process environment?"; injectable so tests need not touch
/// the real one.
pub(super) type ProcessEnv = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The variables of one Laravel app, as `env()` would read them.
pub(super) struct Environment {
    file: HashMap<String, String>,
    process: ProcessEnv,
    /// The names set in the process environment, for settings found by their name's prefix.
    process_names: Vec<String>,
}

impl Environment {
    /// Reads and parses the app's `.env` with the rules of phpdotenv `rules`; the process
    /// environment wins. The file must be a regular file of at most
    /// [`bounded::MAX_ENV_BYTES`].
    pub(super) fn load(path: &Path, rules: DotenvRules) -> Result<Self, ConfigError> {
        let bytes =
            bounded::read(path, bounded::MAX_ENV_BYTES).map_err(|source| ConfigError::ReadEnv {
                path: path.to_path_buf(),
                source,
            })?;
        let text = dotenv::decode(&bytes);
        let mut env = Self::parse_with(&text, rules, Box::new(|name| std::env::var(name).ok()))
            .map_err(|source| ConfigError::ParseEnv {
                path: path.to_path_buf(),
                source,
            })?;
        env.process_names = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .collect();
        Ok(env)
    }

    /// Builds the environment from `.env` text and a process-environment lookup, with
    /// phpdotenv 5.4's rules (Laravel 8's).
    #[cfg(test)]
    pub(super) fn parse(text: &str, process: ProcessEnv) -> Result<Self, dotenv::DotenvError> {
        Self::parse_with(text, DotenvRules::Before5_5, process)
    }

    /// The same with the rules of another phpdotenv.
    pub(super) fn parse_with(
        text: &str,
        rules: DotenvRules,
        process: ProcessEnv,
    ) -> Result<Self, dotenv::DotenvError> {
        let file = dotenv::parse(text, rules, &*process)?.into_iter().collect();
        Ok(Self {
            file,
            process,
            process_names: Vec::new(),
        })
    }

    /// The same, with `names` set in the process environment as far as [`Self::names`] is
    /// concerned (tests inject the process environment as a lookup).
    #[cfg(test)]
    pub(super) fn with_process_names(mut self, names: &[&str]) -> Self {
        self.process_names = names.iter().map(|n| (*n).to_string()).collect();
        self
    }

    /// Every variable name that starts with `prefix`, in the process environment or the
    /// `.env`, sorted and without repeats.
    pub(super) fn names_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .file
            .keys()
            .chain(&self.process_names)
            .filter(|name| name.starts_with(prefix))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The raw string of `name`, before `env()`'s mapping, or `None` if it is not set anywhere.
    pub(super) fn raw(&self, name: &str) -> Option<String> {
        (self.process)(name).or_else(|| self.file.get(name).cloned())
    }

    /// Whether `name` is set in the process environment, which then wins over the `.env`: errors
    /// send the reader there rather than to the file.
    pub(super) fn set_in_process(&self, name: &str) -> bool {
        (self.process)(name).is_some()
    }

    /// Where the value of `name` was given (`env_file` being this environment's `.env`), for
    /// errors about it.
    pub(super) fn origin(&self, name: &str, env_file: &Path) -> ValueOrigin {
        if self.set_in_process(name) {
            ValueOrigin::ProcessEnv
        } else {
            ValueOrigin::EnvFile(env_file.to_path_buf())
        }
    }

    /// What `env(name)` returns, or `None` when the variable is not set at all (and Laravel would
    /// use the default).
    pub(super) fn get(&self, name: &str) -> Option<EnvValue> {
        self.raw(name).map(|raw| interpret(&raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str, process: &'static [(&'static str, &'static str)]) -> Environment {
        Environment::parse(
            text,
            Box::new(move |name| {
                process
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_string())
            }),
        )
        .expect("valid .env")
    }

    #[test]
    fn process_environment_wins_over_the_file() {
        let env = env(
            "REDIS_HOST=file-host\nREDIS_PORT=6380\n",
            &[("REDIS_HOST", "proc-host")],
        );
        assert_eq!(env.raw("REDIS_HOST").as_deref(), Some("proc-host"));
        assert_eq!(env.raw("REDIS_PORT").as_deref(), Some("6380"));
        assert_eq!(env.raw("MISSING"), None);
    }

    #[test]
    fn values_are_mapped_like_laravel_env() {
        let env = env("A=null\nB=\nC=(true)\nD=\"'quoted'\"\n", &[]);
        assert_eq!(env.get("A"), Some(EnvValue::Null));
        assert_eq!(env.get("B"), Some(EnvValue::Str(String::new())));
        assert_eq!(env.get("C"), Some(EnvValue::Bool(true)));
        assert_eq!(env.get("D"), Some(EnvValue::Str("quoted".into())));
        assert_eq!(env.get("E"), None);
    }
}
