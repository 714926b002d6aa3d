//! The crate's one direction of dependencies, checked on every run of the tests.
//!
//! Each top-level module of `src/` sits in a layer; a module may use modules of its own layer
//! or of layers below, never above, and the modules never form a cycle. `config` is the leaf:
//! it uses nothing of the crate outside itself, so it reads as a library any Rust service could
//! use to find a Laravel app's Redis and MySQL; and its own files form no cycle either.
//!
//! The graph is read from the source: every `crate::<module>` path (and `crate::{a, b}` group)
//! in the code of a file of another module; comment and doc lines do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Layers from the bottom up; each top-level module of `src/` must be in exactly one.
const LAYERS: &[&[&str]] = &[
    &[
        "config", "backoff", "throttle", "logging", "stats", "shutdown", "systemd",
    ],
    &["redis", "mysql", "endpoint"],
    &["key", "queue", "job", "contract"],
    &["source", "sink"],
    &["error"],
    &["worker"],
    &["cmd", "cli"],
];

/// A graph of names: each one to the names it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// A file's code without its comment and doc lines.
fn code_of(file: &Path) -> String {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The first segments of the paths that follow `prefix` (`crate::`, `super::`): `a` in
/// `crate::a::b`, and `a`, `b` in `crate::{a::x, b}`.
fn paths_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices(prefix) {
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_heads(group));
        } else {
            found.insert(identifier(rest));
        }
    }
    found.retain(|name| name.starts_with(|c: char| c.is_ascii_lowercase()));
    found
}

/// The first segment of each path of a `{...}` group, up to its closing brace.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = vec![identifier(group.trim_start())];
    let mut depth = 1;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => break,
            '}' => depth -= 1,
            ',' if depth == 1 => heads.push(identifier(group[at + 1..].trim_start())),
            _ => {}
        }
    }
    heads
}

/// Each top-level module of `src/` with the other top-level modules it uses.
fn module_graph() -> Graph {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let uses = paths_after(&code_of(&file), "crate::");
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(uses.into_iter().filter(|used| *used != module));
    }
    graph
}

/// Each file of `src/config/` (by module name) with the sibling files it uses through
/// `super::<file>` or `crate::config::<file>`.
fn config_file_graph() -> Graph {
    let dir = src_dir().join("config");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let name_of = |file: &Path| {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        stem.to_string()
    };
    let siblings: BTreeSet<String> = files.iter().map(|f| name_of(f)).collect();
    let mut graph = Graph::new();
    for file in files.iter().filter(|f| f.parent() == Some(dir.as_path())) {
        let name = name_of(file);
        if name == "mod" {
            // The module root declares and re-exports the files; it is not one of them.
            continue;
        }
        let code = code_of(file);
        let mut uses = paths_after(&code, "super::");
        uses.extend(paths_after(&code, "crate::config::"));
        uses.retain(|used| *used != name && siblings.contains(used));
        graph.insert(name, uses);
    }
    graph
}

/// The cycles of `graph`, each as the path that closes it (`a -> b -> a`).
fn cycles(graph: &Graph) -> Vec<String> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            found.push(cycle.join(" -> "));
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done, found);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn the_graphs_are_read_from_the_source() {
    // A reader that found nothing would pass every other test here.
    let modules = module_graph();
    assert!(
        modules
            .get("worker")
            .is_some_and(|uses| uses.contains("config")),
        "worker uses config, but the graph read {modules:?}"
    );
    let files = config_file_graph();
    assert!(
        files
            .get("settings")
            .is_some_and(|uses| uses.contains("resolve")),
        "config/settings.rs uses config/resolve.rs, but the graph read {files:?}"
    );
    assert_eq!(
        paths_after("use crate::{a::x, b::{y, z}};\nuse crate::c;", "crate::"),
        BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()])
    );
}

#[test]
fn every_module_has_a_layer() {
    for module in module_graph().keys() {
        assert!(
            rank(module).is_some(),
            "src/{module} is in no layer of tests/layering.rs: add it to LAYERS"
        );
    }
}

#[test]
fn config_is_a_leaf() {
    let graph = module_graph();
    let uses = graph.get("config").cloned().unwrap_or_default();
    assert!(
        uses.is_empty(),
        "src/config uses {uses:?}: it must use nothing of the crate outside itself"
    );
}

#[test]
fn config_files_form_no_cycle() {
    let found = cycles(&config_file_graph());
    assert!(
        found.is_empty(),
        "files of src/config use each other in a cycle: {found:?}; move what both need into a file of its own"
    );
}

#[test]
fn dependencies_point_down() {
    let mut upward = Vec::new();
    for (module, uses) in module_graph() {
        for used in uses {
            if let (Some(from), Some(to)) = (rank(&module), rank(&used))
                && to > from
            {
                upward.push(format!("{module} -> {used}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "dependencies pointing up a layer: {upward:?}"
    );
}

#[test]
fn modules_form_no_cycle() {
    let found = cycles(&module_graph());
    assert!(
        found.is_empty(),
        "modules use each other in a cycle: {found:?}"
    );
}
