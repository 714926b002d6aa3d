// STUB: replaced by the real phpdotenv parser.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct DotenvError {
    pub line: usize,
    pub message: String,
}
pub fn parse(
    text: &str,
    process_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, DotenvError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let k = k.trim().to_string();
            if process_env(&k).is_some() {
                continue;
            }
            let v = v.trim().trim_matches('"').to_string();
            out.retain(|(n, _)| *n != k);
            out.push((k, v));
        }
    }
    Ok(out)
}
