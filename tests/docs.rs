//! The documentation as a newcomer and an operator follow it: the README, the guide under
//! `docs/`, and what they promise to list.
//!
//! * Every relative link and `#anchor` in `README.md` and `docs/**/*.md` resolves: the file (or
//!   folder) exists inside the repository, and an anchor names a heading of its page by GitHub's
//!   slug rules (lowercase, punctuation removed, spaces to hyphens, repeats suffixed `-1`, `-2`).
//!   Links inside code blocks and code spans are not links, and are not checked.
//! * Every page of the guide is reachable from the README.
//! * Every `ORDER_EXPIRE_*` setting the code reads (the string literals of `src/` and
//!   `crates/*/src/`, outside tests) and every flag of every subcommand (from the real clap
//!   definition, `order_expire::cli::Cli`) is in the configuration reference, each setting with
//!   its flag in the same table row.
//! * The benchmark's generated numbers have exactly one home: the markers of
//!   `docs/performance.md`, which `benches/burst/page.rs` rewrites.

#[path = "../benches/burst/page.rs"]
mod page;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use clap::CommandFactory;

/// The page that must list every setting and flag.
const REFERENCE: &str = "docs/configuration.md";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `README.md` and every `.md` file under `docs/`, as paths relative to `root`, sorted.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    let mut dirs = vec![PathBuf::from("docs")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let relative = dir.join(entry.file_name());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(relative);
            } else if relative.extension().is_some_and(|e| e == "md") {
                files.push(relative);
            }
        }
    }
    files.sort();
    files
}

// --- Markdown, as far as links and headings need it ------------------------------------------

/// The fence that opens or closes a code block on this line (three or more backticks or
/// tildes, indented at most three spaces), with its length.
fn fence(line: &str) -> Option<(char, usize)> {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let c = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = trimmed.chars().take_while(|x| *x == c).count();
    (n >= 3).then_some((c, n))
}

/// The lines of `text` outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut open: Option<(char, usize)> = None;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match (open, fence(line)) {
            (None, Some(f)) => open = Some(f),
            (Some((c, n)), Some((c2, n2))) if c == c2 && n2 >= n => open = None,
            (None, None) => lines.push((i + 1, line)),
            _ => {}
        }
    }
    lines
}

/// `text` with the content of every code span blanked out (newlines kept), so that what looks
/// like a link inside backticks is not taken for one. A span may cross a line break, as in
/// CommonMark; a backtick run without its closing run is literal.
fn blank_code_spans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = chars.clone();
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let mut j = i + n;
        let close = loop {
            if j >= chars.len() {
                break None;
            }
            if chars[j] == '`' {
                let m = run_at(j);
                if m == n {
                    break Some(j);
                }
                j += m;
            } else {
                j += 1;
            }
        };
        match close {
            Some(j) => {
                for c in &mut out[i..j + n] {
                    if *c != '\n' {
                        *c = ' ';
                    }
                }
                i = j + n;
            }
            None => i += n,
        }
    }
    out.into_iter().collect()
}

/// The destinations of the inline links and images (`[text](dest "title")`) and the link
/// reference definitions (`[label]: dest`) of `text`, with their line numbers; code ignored.
fn links(text: &str) -> Vec<(usize, String)> {
    let prose: Vec<(usize, &str)> = prose_lines(text);
    let joined = prose.iter().map(|(_, l)| *l).collect::<Vec<_>>().join("\n");
    let blanked = blank_code_spans(&joined);
    let mut found = Vec::new();
    for (index, line) in blanked.lines().enumerate() {
        let number = prose[index].0;
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let dest = after[..end].split_whitespace().next().unwrap_or("");
            found.push((number, dest.trim_matches(['<', '>']).to_string()));
            rest = &after[end..];
        }
        let trimmed = line.trim_start();
        if let Some(label_end) = trimmed.strip_prefix('[').and_then(|t| t.find("]:")) {
            let dest = trimmed[label_end + 3..].split_whitespace().next();
            if let Some(dest) = dest {
                found.push((number, dest.to_string()));
            }
        }
    }
    found
}

/// A heading's anchor as GitHub makes it: the rendered text (code spans, emphasis and link
/// syntax removed), lowercased, every character that is not a letter, a digit, a space, `-` or
/// `_` removed, and spaces turned into hyphens.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // [text](url) renders as text.
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else {
            break;
        };
        let Some(close) = rest[open + mid..].find(')') else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..open + mid]);
        rest = &rest[open + mid + close + 1..];
    }
    text.push_str(rest);
    text.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of a page: its ATX headings' slugs (outside code blocks), a repeated slug
/// suffixed `-1`, `-2`... in order, and the `id`/`name` of HTML anchors.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut all = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let trimmed = line.trim_start_matches(' ');
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        if line.len() - trimmed.len() > 3 || !(1..=6).contains(&hashes) {
            continue;
        }
        let after = &trimmed[hashes..];
        if !(after.is_empty() || after.starts_with(' ') || after.starts_with('\t')) {
            continue;
        }
        let title = after.trim().trim_end_matches('#').trim_end();
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        all.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
        for attribute in ["id=\"", "name=\""] {
            let mut rest = line;
            while let Some(at) = rest.find(attribute) {
                let value = &rest[at + attribute.len()..];
                let end = value.find('"').unwrap_or(value.len());
                all.insert(value[..end].to_string());
                rest = &value[end..];
            }
        }
    }
    all
}

/// `%xx` decoded, as a browser decodes a link's path and fragment.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) if bytes[i] == b'%' => {
                out.push(b);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `path` with `.` and `..` folded, or `None` when it climbs out of the repository.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

// --- The checks -------------------------------------------------------------------------------

/// What checking the links of a set of pages found.
#[derive(Debug, Default)]
struct LinkReport {
    /// Relative links checked (anchors within a page included).
    checked: usize,
    /// Of those, links with an `#anchor`.
    anchors: usize,
    /// One line per link that does not resolve.
    broken: Vec<String>,
    /// The pages (relative to the root) that some checked link points to.
    targets: BTreeSet<PathBuf>,
}

/// Checks every relative link of `files` (paths relative to `root`).
fn check_links(root: &Path, files: &[PathBuf]) -> LinkReport {
    let mut report = LinkReport::default();
    let mut anchor_cache: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let text = read(&root.join(file));
        for (line, dest) in links(&text) {
            if dest.is_empty() || dest.contains("://") || dest.starts_with("mailto:") {
                continue;
            }
            report.checked += 1;
            let (path, fragment) = match dest.split_once('#') {
                Some((p, f)) => (p, Some(percent_decode(f))),
                None => (dest.as_str(), None),
            };
            let where_ = format!("{}:{line}: ({dest})", file.display());
            let target = if path.is_empty() {
                Some(file.clone())
            } else {
                let base = file.parent().unwrap_or(Path::new(""));
                normalize(&base.join(percent_decode(path)))
            };
            let Some(target) = target else {
                report
                    .broken
                    .push(format!("{where_} leaves the repository"));
                continue;
            };
            if !root.join(&target).exists() {
                report
                    .broken
                    .push(format!("{where_}: {} does not exist", target.display()));
                continue;
            }
            report.targets.insert(target.clone());
            let Some(fragment) = fragment else {
                continue;
            };
            report.anchors += 1;
            if target.extension().is_none_or(|e| e != "md") {
                report.broken.push(format!(
                    "{where_}: an anchor into a page that is not Markdown"
                ));
                continue;
            }
            let known = anchor_cache
                .entry(target.clone())
                .or_insert_with(|| anchors(&read(&root.join(&target))));
            if !known.contains(&fragment) {
                report.broken.push(format!(
                    "{where_}: {} has no heading #{fragment}",
                    target.display()
                ));
            }
        }
    }
    report
}

/// Cuts every `#[cfg(test)] mod name { ... }` block out of a Rust source (braces counted, which
/// the sources' balanced format strings allow).
fn without_test_modules(source: &str) -> String {
    let mut out = String::new();
    let mut rest = source;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let head_end = after.find(['{', ';']).unwrap_or(after.len());
        let is_module = after[..head_end].contains("mod ") && after[head_end..].starts_with('{');
        if !is_module {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after.char_indices().skip(head_end) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every `ORDER_EXPIRE_*` name the code reads: each string literal that is exactly such a name,
/// in the Rust sources of `src/` and `crates/*/src/`, outside test files and test modules. A
/// literal ending in `_` is a family (`ORDER_EXPIRE_ON_` is `ORDER_EXPIRE_ON_<TYPE>`); the bare
/// prefix `ORDER_EXPIRE_` is not a setting.
fn settings_in_code(root: &Path) -> BTreeSet<String> {
    let mut dirs = vec![root.join("src")];
    if let Ok(crates) = fs::read_dir(root.join("crates")) {
        dirs.extend(crates.flatten().map(|c| c.path().join("src")));
    }
    let mut names = BTreeSet::new();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if !name.ends_with(".rs") || name.ends_with("_tests.rs") || name == "tests.rs" {
                continue;
            }
            let source = without_test_modules(&read(&path));
            for literal in source.split('"').skip(1).step_by(2) {
                let is_name = literal.starts_with("ORDER_EXPIRE_")
                    && literal.len() > "ORDER_EXPIRE_".len()
                    && literal
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if is_name {
                    let family = literal.ends_with('_');
                    names.insert(if family {
                        format!("{literal}<TYPE>")
                    } else {
                        literal.to_string()
                    });
                }
            }
        }
    }
    names
}

/// Every flag of the command line: the long (`--key-type`) and short (`-v`) names of each
/// option of the command and of every subcommand; `--help`, `-h` and `--version` included.
fn flags() -> BTreeSet<String> {
    let mut command = order_expire::cli::Cli::command();
    command.build();
    let mut stack = vec![command];
    let mut found = BTreeSet::new();
    while let Some(command) = stack.pop() {
        for arg in command.get_arguments().filter(|a| !a.is_positional()) {
            found.extend(arg.get_long().map(|long| format!("--{long}")));
            found.extend(arg.get_short().map(|short| format!("-{short}")));
        }
        stack.extend(command.get_subcommands().cloned());
    }
    found
}

/// Whether `text` names `word` whole: not as the start of a longer name.
fn names(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let next = text[at + word.len()..].chars().next();
        let before = text[..at].chars().next_back();
        let continues =
            |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || "-_".contains(c));
        !continues(next) && !continues(before)
    })
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let root = root();
    let files = markdown_files(&root);
    assert!(
        files.len() >= 10,
        "README.md and the guide's pages: {files:?}"
    );
    let report = check_links(&root, &files);
    println!(
        "{} pages, {} relative links checked ({} with an anchor)",
        files.len(),
        report.checked,
        report.anchors
    );
    assert!(
        report.broken.is_empty(),
        "links that do not resolve:\n{}",
        report.broken.join("\n")
    );
    assert!(report.checked > 60, "only {} links found", report.checked);
    assert!(report.anchors > 30, "only {} anchors found", report.anchors);
}

#[test]
fn every_page_of_the_guide_is_reachable_from_the_readme() {
    let root = root();
    let mut reached = BTreeSet::from([PathBuf::from("README.md")]);
    let mut queue = vec![PathBuf::from("README.md")];
    while let Some(page) = queue.pop() {
        for target in check_links(&root, std::slice::from_ref(&page)).targets {
            let markdown = target.extension().is_some_and(|e| e == "md");
            if markdown && reached.insert(target.clone()) {
                queue.push(target);
            }
        }
    }
    let unreached: Vec<PathBuf> = markdown_files(&root)
        .into_iter()
        .filter(|f| !reached.contains(f))
        .collect();
    assert!(
        unreached.is_empty(),
        "pages no link from the README leads to: {unreached:?}"
    );
}

#[test]
fn every_setting_and_flag_is_in_the_configuration_reference() {
    let root = root();
    let reference = read(&root.join(REFERENCE));
    let settings = settings_in_code(&root);
    let flags = flags();
    println!(
        "{} settings in the code, {} flags on the command line",
        settings.len(),
        flags.len()
    );
    assert!(settings.len() >= 25, "settings found: {settings:?}");
    assert!(flags.len() >= 35, "flags found: {flags:?}");
    for known in ["ORDER_EXPIRE_TTL", "ORDER_EXPIRE_ON_<TYPE>"] {
        assert!(settings.contains(known), "{known} in {settings:?}");
    }
    for known in [
        "--env",
        "--key-type",
        "--dry-run",
        "--ttl",
        "--no-connect",
        "-v",
    ] {
        assert!(flags.contains(known), "{known} in {flags:?}");
    }

    let missing: Vec<&String> = settings
        .iter()
        .chain(flags.iter())
        .filter(|name| !names(&reference, name))
        .collect();
    assert!(missing.is_empty(), "{REFERENCE} does not name: {missing:?}");

    // Each setting that has a flag is in a table row with that flag.
    let rows: Vec<&str> = reference.lines().filter(|l| l.starts_with('|')).collect();
    for setting in &settings {
        let flag = order_expire::config::flag_of(setting);
        if !flags.contains(&flag) {
            continue;
        }
        let cell = format!("`{setting}`");
        assert!(
            rows.iter()
                .any(|row| row.contains(&cell) && names(row, &flag)),
            "{REFERENCE}: no table row with {cell} and its flag {flag}"
        );
    }
}

#[test]
fn the_benchmark_numbers_have_one_generated_home() {
    let root = root();
    for file in markdown_files(&root) {
        let text = read(&root.join(&file));
        // A marker is a line of its own; prose may name one in a code span.
        let count = text
            .lines()
            .filter(|l| l.trim() == page::BEGIN || l.trim() == page::END)
            .count();
        if file == Path::new(page::PATH) {
            assert_eq!(count, 2, "{}: one pair of markers", file.display());
            assert_eq!(
                text.matches(page::BEGIN).count() + text.matches(page::END).count(),
                2,
                "{}: the writer finds the first marker, so none may be named elsewhere",
                file.display()
            );
            let body = &text[text.find(page::BEGIN).expect("begin") + page::BEGIN.len()
                ..text.find(page::END).expect("end")];
            assert!(
                body.contains("| burst |") && body.contains("| target |"),
                "{}: the generated tables sit between the markers",
                file.display()
            );
            let body = body.strip_prefix('\n').unwrap_or(body);
            assert!(
                page::rewrite(&text, body).is_ok_and(|same| same == text),
                "the benchmark's writer rewrites {} in place",
                page::PATH
            );
            // The PostgreSQL table: its own pair, rewritten in place by its part alone.
            let markers = (page::PGSQL_BEGIN, page::PGSQL_END);
            assert_eq!(
                text.matches(markers.0).count() + text.matches(markers.1).count(),
                2,
                "{}: one pair of PostgreSQL markers",
                file.display()
            );
            let body = &text[text.find(markers.0).expect("begin") + markers.0.len()
                ..text.find(markers.1).expect("end")];
            let body = body.strip_prefix('\n').unwrap_or(body);
            assert!(
                page::rewrite_between(&text, body, markers).is_ok_and(|same| same == text),
                "the PostgreSQL part rewrites {} in place",
                page::PATH
            );
        } else {
            assert_eq!(count, 0, "{}: generated numbers elsewhere", file.display());
        }
    }
}

// --- The checker itself: it finds what it must --------------------------------------------------

#[test]
fn slugs_follow_githubs_rules() {
    for (heading, expected) in [
        (
            "Throughput and latency (`cargo bench --bench burst`)",
            "throughput-and-latency-cargo-bench---bench-burst",
        ),
        ("What `check` shows", "what-check-shows"),
        ("order-expire's settings", "order-expires-settings"),
        (
            "The contract: what cancels an order, what keeps it",
            "the-contract-what-cancels-an-order-what-keeps-it",
        ),
        (
            "Migrating from `php artisan order:expire`",
            "migrating-from-php-artisan-orderexpire",
        ),
        (
            "A [linked](x.md) *word* and snake_case",
            "a-linked-word-and-snake_case",
        ),
    ] {
        assert_eq!(slug(heading), expected, "{heading}");
    }
    let page = "# Top\n## Same\n```sh\n# not a heading\n```\n## Same\n### Same ###\n";
    let found = anchors(page);
    let expected: BTreeSet<String> = ["top", "same", "same-1", "same-2"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn the_link_check_reports_what_does_not_resolve() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    fs::create_dir(dir.path().join("docs")).expect("docs/");
    let write = |path: &str, text: &str| fs::write(dir.path().join(path), text).expect(path);
    write(
        "README.md",
        "# Start\n\n[guide](docs/a.md), [section](docs/a.md#second), [here](#start),\n\
         [gone](docs/missing.md), [no such heading](docs/a.md#third), [up](../outside.md),\n\
         `[in code](nowhere.md)` and [web](https://example.com/x.md).\n\n\
         ```md\n[in a block](nowhere.md)\n```\n\n[ref]: docs/a.md#first\n",
    );
    write(
        "docs/a.md",
        "# First\n\n## Second\n\n[back](../README.md#start)\n",
    );
    let files = markdown_files(dir.path());
    assert_eq!(
        files,
        [PathBuf::from("README.md"), PathBuf::from("docs/a.md")]
    );
    let report = check_links(dir.path(), &files);
    assert_eq!(report.checked, 8, "{report:?}");
    assert_eq!(report.broken.len(), 3, "{report:#?}");
    for expected in ["docs/missing.md", "#third", "../outside.md"] {
        assert!(
            report.broken.iter().any(|b| b.contains(expected)),
            "{expected} in {:?}",
            report.broken
        );
    }
}

#[test]
fn the_settings_scan_skips_tests_and_finds_families() {
    let source = "pub const A: &str = \"ORDER_EXPIRE_REAL\";\n\
                  const P: &str = \"ORDER_EXPIRE_ON_\";\n\
                  fn f() { g(\"ORDER_EXPIRE_TTL is not set\"); h(\"ORDER_EXPIRE_\"); }\n\
                  #[cfg(test)]\nmod tests;\n\
                  #[cfg(test)]\nmod tests {\n    fn t() { let _ = format!(\"{}\", \"ORDER_EXPIRE_FAKE\"); }\n}\n";
    let dir = tempfile::tempdir().expect("a temporary folder");
    fs::create_dir_all(dir.path().join("src")).expect("src/");
    fs::write(dir.path().join("src/lib.rs"), source).expect("lib.rs");
    fs::write(
        dir.path().join("src/lib_tests.rs"),
        "const T: &str = \"ORDER_EXPIRE_TEST_ONLY\";",
    )
    .expect("lib_tests.rs");
    let found: Vec<String> = settings_in_code(dir.path()).into_iter().collect();
    assert_eq!(found, ["ORDER_EXPIRE_ON_<TYPE>", "ORDER_EXPIRE_REAL"]);
    assert!(names("`--key-type` x", "--key-type"));
    assert!(!names("`--key-type-x`", "--key-type"));
    assert!(!names("`ORDER_EXPIRE_TTL_X`", "ORDER_EXPIRE_TTL"));
}
