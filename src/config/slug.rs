// STUB: replaced by the real Str::slug.
pub fn slug(title: &str, separator: char) -> String {
    let lower = title.to_lowercase();
    let mut out = String::new();
    for c in lower.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c)
        } else if (c == ' ' || c == '-' || c == '_') && !out.ends_with(separator) {
            out.push(separator)
        }
    }
    out.trim_matches(separator).to_string()
}
