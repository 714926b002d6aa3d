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
    &["redis", "mysql", "pgsql", "db", "endpoint"],
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

/// Each file of a module directory (by file name) with the sibling files it uses through
/// `super::<file>` or `<root>::<file>` (`crate::redis::` for `src/redis/`, `crate::` for the
/// config crate's `src/`). The module root (`mod.rs`, `lib.rs`) declares and re-exports the
/// files; it is not one of them.
fn file_graph(dir: &Path, root: &str) -> Graph {
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    let name_of = |file: &Path| {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        stem.to_string()
    };
    let direct: Vec<&PathBuf> = files.iter().filter(|f| f.parent() == Some(dir)).collect();
    let siblings: BTreeSet<String> = direct.iter().map(|f| name_of(f)).collect();
    let mut graph = Graph::new();
    for file in direct {
        let name = name_of(file);
        if name == "mod" || name == "lib" {
            continue;
        }
        let code = code_of(file);
        let mut uses = paths_after(&code, "super::");
        uses.extend(paths_after(&code, root));
        uses.retain(|used| *used != name && siblings.contains(used));
        graph.insert(name, uses);
    }
    graph
}

/// The config crate's source directory.
fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/config/src")
}

/// Every module directory of `src/` (nested ones too) with the path its files are named by
/// (`crate::source::deadline::`), and the config crate's `src/` (`crate::`).
fn module_dirs() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, path: &str, out: &mut Vec<(PathBuf, String)>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let sub = entry.expect("a directory entry").path();
            if !sub.is_dir() {
                continue;
            }
            let Some(name) = sub.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            let sub_path = format!("{path}{name}::");
            out.push((sub.clone(), sub_path.clone()));
            walk(&sub, &sub_path, out);
        }
    }
    let mut dirs = vec![(config_dir(), "crate::".to_string())];
    walk(&src_dir(), "crate::", &mut dirs);
    dirs.retain(|(dir, _)| !dir.ends_with("stock") && !dir.starts_with(config_dir().join("stock")));
    dirs
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
    let files = file_graph(&config_dir(), "crate::");
    assert!(
        files
            .get("settings")
            .is_some_and(|uses| uses.contains("resolve")),
        "crates/config/src/settings.rs uses resolve.rs, but the graph read {files:?}"
    );
    let redis = file_graph(&src_dir().join("redis"), "crate::redis::");
    assert!(
        redis.get("cluster").is_some_and(|uses| !uses.is_empty()),
        "src/redis/cluster.rs uses its siblings, but the graph read {redis:?}"
    );
    assert!(
        module_dirs().len() >= 9,
        "every module directory is read, but found {:?}",
        module_dirs()
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
    // As its own crate, the compiler keeps it from using the worker's modules; this keeps it
    // from depending on any other crate of the workspace either.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/config/Cargo.toml");
    let text = fs::read_to_string(&manifest).expect("crates/config/Cargo.toml");
    let local: Vec<&str> = text.lines().filter(|l| l.contains("path =")).collect();
    assert!(
        local
            .iter()
            .all(|l| l.trim_start().starts_with("path = \"src/")),
        "crates/config depends on other crates of the workspace: {local:?}; it must stay the leaf"
    );
}

#[test]
fn files_of_a_module_form_no_cycle() {
    let mut found = Vec::new();
    for (dir, root) in module_dirs() {
        for cycle in cycles(&file_graph(&dir, &root)) {
            let shown = dir.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(&dir);
            found.push(format!("{}: {cycle}", shown.display()));
        }
    }
    assert!(
        found.is_empty(),
        "files of a module use each other in a cycle: {found:?}; move what both need into a file of its own"
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

/// The longest a function may be, from `fn` to its closing brace.
const MAX_FUNCTION_LINES: usize = 120;

/// Every function of a file (free, in an `impl` or a trait, nested ones too) with its lines.
struct FunctionLengths {
    file: String,
    found: Vec<(String, usize)>,
}

impl FunctionLengths {
    fn record(&mut self, name: &syn::Ident, fn_token: &syn::token::Fn, block: &syn::Block) {
        let first = fn_token.span.start().line;
        let last = block.brace_token.span.close().end().line;
        let lines = last.saturating_sub(first) + 1;
        self.found.push((format!("{}: {name}", self.file), lines));
    }
}

impl<'ast> syn::visit::Visit<'ast> for FunctionLengths {
    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.record(&item.sig.ident, &item.sig.fn_token, &item.block);
        syn::visit::visit_item_fn(self, item);
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        self.record(&item.sig.ident, &item.sig.fn_token, &item.block);
        syn::visit::visit_impl_item_fn(self, item);
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(block) = &item.default {
            self.record(&item.sig.ident, &item.sig.fn_token, block);
        }
        syn::visit::visit_trait_item_fn(self, item);
    }
}

/// Every function of the workspace's Rust source (the crates, their tests and benchmarks).
fn function_lengths() -> Vec<(String, usize)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "crates", "tests", "benches", "examples"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut all = Vec::new();
    for file in files {
        let text =
            fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("parse {shown}: {e}"));
        let mut lengths = FunctionLengths {
            file: shown,
            found: Vec::new(),
        };
        syn::visit::Visit::visit_file(&mut lengths, &parsed);
        all.extend(lengths.found);
    }
    all
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let all = function_lengths();
    // A reader that found nothing would pass: the worker's own run loop is one of them.
    assert!(
        all.len() > 500 && all.iter().any(|(name, _)| name == "src/worker.rs: run"),
        "the functions are read from the source, but found {} of them",
        all.len()
    );
    let mut long: Vec<String> = all
        .into_iter()
        .filter(|(_, lines)| *lines > MAX_FUNCTION_LINES)
        .map(|(name, lines)| format!("{name} ({lines} lines)"))
        .collect();
    long.sort();
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines: {long:?}; split each into functions whose names say what the parts do"
    );
}
