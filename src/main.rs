//! `order-expire`: parses the command line and wires the library together.

use std::process::ExitCode;

use clap::Parser;

use order_expire::cli::{Cli, Command, WritePathArg};
use order_expire::config::{Settings, keys};
use order_expire::{Error, cmd, logging};

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.verbose);
    logging::log_panics();
    // Both TLS users (redis, mysql_async) share one process-wide rustls provider; a second
    // install attempt just means one is already there.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", e.render());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Asks glibc's malloc for a single arena. By default it makes one per thread that allocates
/// (up to eight per core), and a burst handled on every tokio worker leaves each arena with
/// freed but fragmented pages that are never given back: the peak RSS grows with the number of
/// threads, not with what is live. One arena costs nothing measurable here (the hot allocations
/// are few and short). The static musl build has no arenas, so this is glibc's only. An
/// operator's own `MALLOC_ARENA_MAX` (which glibc reads itself) is left to decide.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a malloc parameter; called first in main, before any thread.
    // Its result (0 on an unknown parameter) changes nothing: the default arenas remain.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

/// Runs the command; its exit status when it has one of its own (`status`), else success.
async fn run(cli: Cli) -> Result<ExitCode, Error> {
    let overrides = cli.overrides();
    let env_file = cli.env_file.ok_or_else(|| {
        Error::Usage(
            "--env FILE is required: the Laravel app's .env, e.g. --env /var/www/app/.env".into(),
        )
    })?;
    let settings = Settings::load(&env_file, &overrides)?;
    let done = match cli.command.unwrap_or(Command::Run) {
        Command::Run => cmd::run::run(&settings, &cli.run).await,
        Command::Schedule {
            order_id,
            ttl,
            value,
        } => cmd::schedule::command(&settings, order_id, ttl, value.as_deref()).await,
        Command::Check {
            json,
            no_connect,
            compare,
        } => {
            let lock_wait = cli.run.write_path == WritePathArg::LockWait;
            let laravel = compare.then(|| {
                let mut forced = overrides.clone();
                forced.insert(keys::CONFIG_SOURCE, "laravel".into());
                Settings::load(&env_file, &forced)
            });
            let options = cmd::check::CheckOptions {
                json,
                connect: !no_connect,
                lock_wait,
            };
            cmd::check::command(&settings, laravel, options).await
        }
        Command::Sweep { dry_run } => cmd::sweep::command(&settings, dry_run, cli.log_format).await,
        Command::Status {
            json,
            metrics_addrs,
        } => {
            let verdict = cmd::status::command(&settings, json, &metrics_addrs).await?;
            return Ok(ExitCode::from(verdict.exit_code()));
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}
