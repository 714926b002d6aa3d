//! The measured numbers of the performance page (`docs/performance.md`), rewritten by a full run
//! between two marker comments in its "Latest run" section, so the figures there are always the
//! latest run's and never typed by hand. The prose around the markers (what each column means)
//! is not touched, and no other page holds a generated copy.

/// The page that holds the markers, from the repository root.
pub const PATH: &str = "docs/performance.md";
pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";

/// `page` with the text between the markers replaced by `body`; an error when the markers are
/// missing or out of order (the page is then left as it is).
pub fn rewrite(page: &str, body: &str) -> Result<String, String> {
    let begin = page
        .find(BEGIN)
        .ok_or_else(|| format!("{PATH} has no {BEGIN} marker"))?;
    let end = page
        .find(END)
        .ok_or_else(|| format!("{PATH} has no {END} marker"))?;
    if end < begin {
        return Err(format!("{PATH} has {END} before {BEGIN}"));
    }
    Ok(format!(
        "{}{BEGIN}\n{}\n{}",
        &page[..begin],
        body.trim_end(),
        &page[end..]
    ))
}
