//! The README's measured numbers, rewritten by a full run between two marker comments in
//! "Measured numbers", so the figures there are always the latest run's and never typed by hand.
//! The prose around the markers (what each column means, the commands) is not touched.

pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";

/// `readme` with the text between the markers replaced by `body`; an error when the markers are
/// missing or out of order (the README is then left as it is).
pub fn rewrite(readme: &str, body: &str) -> Result<String, String> {
    let begin = readme
        .find(BEGIN)
        .ok_or_else(|| format!("README.md has no {BEGIN} marker"))?;
    let end = readme
        .find(END)
        .ok_or_else(|| format!("README.md has no {END} marker"))?;
    if end < begin {
        return Err(format!("README.md has {END} before {BEGIN}"));
    }
    Ok(format!(
        "{}{BEGIN}\n{}\n{}",
        &readme[..begin],
        body.trim_end(),
        &readme[end..]
    ))
}
