//! The measured numbers of the performance page (`docs/performance.md`), rewritten by a full run
//! between two marker comments in its "Latest run" section, so the figures there are always the
//! latest run's and never typed by hand. The prose around the markers (what each column means)
//! is not touched, and no other page holds a generated copy. The PostgreSQL table has markers
//! of its own, so that its part can be run and written alone (`--only-pgsql --write`).

/// The page that holds the markers, from the repository root.
pub const PATH: &str = "docs/performance.md";
pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";
/// The PostgreSQL table's markers (`pgsql.rs`).
pub const PGSQL_BEGIN: &str = "<!-- bench-pgsql:begin -->";
pub const PGSQL_END: &str = "<!-- bench-pgsql:end -->";

/// `page` with the text between the markers replaced by `body`; an error when the markers are
/// missing or out of order (the page is then left as it is).
pub fn rewrite(page: &str, body: &str) -> Result<String, String> {
    rewrite_between(page, body, (BEGIN, END))
}

/// The same between the markers `(begin, end)`.
pub fn rewrite_between(
    page: &str,
    body: &str,
    (begin, end): (&str, &str),
) -> Result<String, String> {
    let at_begin = page
        .find(begin)
        .ok_or_else(|| format!("{PATH} has no {begin} marker"))?;
    let at_end = page
        .find(end)
        .ok_or_else(|| format!("{PATH} has no {end} marker"))?;
    if at_end < at_begin {
        return Err(format!("{PATH} has {end} before {begin}"));
    }
    Ok(format!(
        "{}{begin}\n{}\n{}",
        &page[..at_begin],
        body.trim_end(),
        &page[at_end..]
    ))
}
