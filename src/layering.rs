//! No import circles: a test that reads the source tree (`src/**`, not `src/bin`), finds every
//! path a file names through `crate::`, `super::`, `self::` or a child module it declares, and
//! fails on a cycle between top-level modules (`config` → `director` → `config`) or between
//! files (`checks.rs` → `http.rs` → `checks.rs`, `mod.rs` → `yaml.rs` → `mod.rs`). A circle
//! means neither side can be understood, tested or changed alone; the fix is to move what both
//! need into a lower file that needs neither.
//!
//! Test code (`#[cfg(test)]` items and files) may reach anywhere and is not counted. Comments
//! and string literals are blanked before paths are read, so a doc link is not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges in the node core that its rewrite (issue 11) removes: the core is being rewritten in
/// parallel, so its circles are listed here rather than fixed from outside. Each entry is
/// `(from, to)`; the test fails when an entry no longer occurs, so the list only shrinks.
const KNOWN_CORE_EDGES: &[(&str, &str)] = &[];

/// One source file: its module path and what it names.
struct SourceFile {
    module: Vec<String>,
    text: String,
}

/// Every library source file under `dir`, with its module path (`config/mod.rs` →
/// `config`, `daemon/node/thread.rs` → `daemon::node::thread`).
fn read_tree(root: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if path != root.join("bin") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read a source file");
                files.push(SourceFile {
                    module: module_of(root, &path),
                    text: without_tests(&blank_comments_and_strings(&text)),
                });
            }
        }
    }
    files
}

fn module_of(root: &Path, path: &Path) -> Vec<String> {
    let rel: PathBuf = path
        .strip_prefix(root)
        .expect("under src/")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

/// The text with comments and the contents of string and char literals replaced by spaces.
fn blank_comments_and_strings(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r' && (next == Some('#') || next == Some('"')) && !ident_before(&c, i) {
            // A raw string r"…" or r#"…"#: ends at a quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            while j < c.len() {
                if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): only the first is skipped.
            let close = if next == Some('\\') {
                (i + 2..c.len().min(i + 12)).find(|&j| c[j] == '\'')
            } else {
                (c.get(i + 2) == Some(&'\'')).then_some(i + 2)
            };
            match close {
                Some(j) => {
                    out.push_str("' '");
                    i = j + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident_before(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// The text without `#[cfg(test)]` items (a `mod tests { … }`, a helper, a `mod tests;`).
fn without_tests(text: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let item = &rest[at + MARK.len()..];
        // The item ends at its first `;` outside braces, or at the brace closing its body.
        let mut depth = 0usize;
        let mut end = item.len();
        for (k, ch) in item.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The names of the child modules a file declares (`mod thread;`, `pub mod diag;`).
fn child_modules(text: &str) -> BTreeSet<String> {
    let words: Vec<&str> = text.split(|c: char| c.is_whitespace()).collect();
    words
        .windows(2)
        .filter(|w| w[0] == "mod" && w[1].ends_with(';'))
        .map(|w| w[1].trim_end_matches(';').to_string())
        .collect()
}

/// Every path the text names from a start word (`crate`, `super`, `self` or a child module),
/// as segments; a `{a, b::c}` group gives one path per member.
fn paths(text: &str, starts: &BTreeSet<String>) -> Vec<Vec<String>> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if is_ident(c[i])
            && !ident_before(&c, i)
            && !(i >= 1 && (c[i - 1] == ':' || c[i - 1] == '.'))
        {
            let (word, end) = ident_at(&c, i);
            if starts.contains(&word) && c.get(end) == Some(&':') && c.get(end + 1) == Some(&':') {
                let mut found = Vec::new();
                let after = read_path(&c, i, Vec::new(), &mut found);
                out.extend(found);
                i = after;
                continue;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

fn ident_at(c: &[char], i: usize) -> (String, usize) {
    let mut j = i;
    while j < c.len() && is_ident(c[j]) {
        j += 1;
    }
    (c[i..j].iter().collect(), j)
}

fn skip_space(c: &[char], mut i: usize) -> usize {
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Reads `a::b::{c, d::e}` from `i`; pushes each full path; returns where it ended.
fn read_path(c: &[char], i: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut i = skip_space(c, i);
    loop {
        if c.get(i) == Some(&'{') {
            i += 1;
            loop {
                i = skip_space(c, i);
                match c.get(i) {
                    None => return i,
                    Some('}') => return i + 1,
                    Some(',') => i += 1,
                    Some(ch) if is_ident(*ch) || *ch == '{' => {
                        i = read_path(c, i, prefix.clone(), out);
                    }
                    Some(_) => i += 1,
                }
            }
        }
        if !c.get(i).is_some_and(|ch| is_ident(*ch)) {
            out.push(prefix);
            return i;
        }
        let (word, end) = ident_at(c, i);
        if word != "self" {
            prefix.push(word);
        }
        i = skip_space(c, end);
        if c.get(i) == Some(&':') && c.get(i + 1) == Some(&':') {
            i = skip_space(c, i + 2);
        } else {
            out.push(prefix);
            return i;
        }
    }
}

/// The module graph: file → the files it names (a path resolves to the longest module prefix).
fn file_graph(files: &[SourceFile]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| f.module.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files.iter().filter(|f| !f.module.is_empty()) {
        let children = child_modules(&f.text);
        let mut starts: BTreeSet<String> = ["crate", "super", "self"].map(String::from).into();
        starts.extend(children.iter().cloned());
        for path in paths(&f.text, &starts) {
            let mut abs: Vec<String> = Vec::new();
            let mut segments = path.into_iter().peekable();
            match segments.peek().map(String::as_str) {
                Some("crate") => {
                    segments.next();
                }
                Some("super") => {
                    abs = f.module.clone();
                    while segments.peek().is_some_and(|s| s == "super") {
                        segments.next();
                        abs.pop();
                    }
                }
                Some(child) if children.contains(child) => abs = f.module.clone(),
                _ => abs = f.module.clone(), // `self::` (dropped by read_path)
            }
            abs.extend(segments);
            let target = (1..=abs.len())
                .rev()
                .map(|k| abs[..k].to_vec())
                .find(|m| modules.contains(m));
            if let Some(target) = target
                && target != f.module
                && !target.is_empty()
            {
                graph
                    .entry(f.module.join("::"))
                    .or_default()
                    .insert(target.join("::"));
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the list of its nodes, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut marks, &mut Vec::new()))
}

fn source_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = file_graph(&read_tree(&root));
    for (from, to) in KNOWN_CORE_EDGES {
        let present = graph.get_mut(*from).is_some_and(|t| t.remove(*to));
        assert!(
            present,
            "{from} no longer names {to}: delete the entry from KNOWN_CORE_EDGES"
        );
    }
    graph
}

#[test]
fn no_cycle_between_files() {
    let graph = source_graph();
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import circle between files: {}; move what both sides need into a lower file",
            cycle.join(" → ")
        );
    }
}

#[test]
fn no_cycle_between_top_level_modules() {
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in source_graph() {
        let a = from.split("::").next().unwrap_or_default().to_string();
        for to in tos {
            let b = to.split("::").next().unwrap_or_default().to_string();
            if a != b {
                top.entry(a.clone()).or_default().insert(b);
            }
        }
    }
    if let Some(cycle) = find_cycle(&top) {
        panic!(
            "import circle between modules: {}; move what both need into the lower one",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_reader_sees_paths_groups_and_circles() {
    let file = |module: &str, text: &str| SourceFile {
        module: module.split("::").map(String::from).collect(),
        text: without_tests(&blank_comments_and_strings(text)),
    };
    let files = [
        file(
            "a",
            "mod b;\nmod c;\npub use b::{X, y::Z};\n// crate::d::Nope\nconst S: &str = \"crate::d\";",
        ),
        file(
            "a::b",
            "use super::c::{self, W};\n#[cfg(test)]\nmod tests { use crate::d::T; }",
        ),
        file("a::c", "fn f() -> crate::d::E { make() }"),
        file("d", "use crate::a::{b::X};"),
    ];
    let graph = file_graph(&files);
    let edges = |m: &str| graph.get(m).cloned().unwrap_or_default();
    assert_eq!(edges("a"), ["a::b".to_string()].into());
    assert_eq!(edges("a::b"), ["a::c".to_string()].into());
    assert_eq!(edges("a::c"), ["d".to_string()].into());
    assert_eq!(edges("d"), ["a::b".to_string()].into());
    let cycle = find_cycle(&graph).expect("a::b → a::c → d → a::b");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
}
