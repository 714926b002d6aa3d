// STUB: replaced by the real env() mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Null,
    Bool(bool),
    Str(String),
}
pub fn interpret(raw: &str) -> EnvValue {
    match raw.to_ascii_lowercase().as_str() {
        "null" | "(null)" => EnvValue::Null,
        "true" | "(true)" => EnvValue::Bool(true),
        "false" | "(false)" => EnvValue::Bool(false),
        "empty" | "(empty)" => EnvValue::Str(String::new()),
        _ => {
            let s = if raw.len() >= 2
                && ((raw.starts_with('"') && raw.ends_with('"'))
                    || (raw.starts_with('\'') && raw.ends_with('\'')))
            {
                &raw[1..raw.len() - 1]
            } else {
                raw
            };
            EnvValue::Str(s.to_string())
        }
    }
}
impl EnvValue {
    pub fn to_php_string(&self) -> Option<String> {
        match self {
            EnvValue::Null => None,
            EnvValue::Bool(true) => Some("1".into()),
            EnvValue::Bool(false) => Some(String::new()),
            EnvValue::Str(s) => Some(s.clone()),
        }
    }
    pub fn is_php_empty(&self) -> bool {
        match self {
            EnvValue::Null | EnvValue::Bool(false) => true,
            EnvValue::Bool(true) => false,
            EnvValue::Str(s) => s.is_empty() || s == "0",
        }
    }
}
