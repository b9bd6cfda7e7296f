//! The code's shape, checked (docs/ARCHITECTURE.md, "Layers and limits"):
//! - no import circle between the top-level modules of `src/` (no module reaches, through
//!   its imports, a module that imports it);
//! - no function in `src/` longer than 120 lines, no file of `src/` with more than 700 lines
//!   outside its tests;
//! - every repository path that README.md, docs/*.md and the other Markdown files name exists.
//!
//! Read with `syn` (the code) and by hand (Markdown); nothing is built or run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use syn::spanned::Spanned;
use syn::visit::Visit;

const MAX_FN_LINES: usize = 120;
const MAX_FILE_LINES: usize = 700;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A file of `src/`: its text, its syntax tree and its module path (`["sink", "mqtt"]` for
/// `src/sink/mqtt/mod.rs`; empty for the crate root).
struct Source {
    rel: String,
    text: String,
    file: syn::File,
    module: Vec<String>,
}

fn sources() -> Vec<Source> {
    let src = root().join("src");
    rust_files(&src)
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(root()).unwrap().display().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
            let mut module: Vec<String> = path
                .strip_prefix(&src)
                .unwrap()
                .with_extension("")
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            Source {
                rel,
                text,
                file,
                module,
            }
        })
        .collect()
}

/// The top-level modules a token stream names: `crate::x`, `crate::{x, y::z}`, and `super::`
/// chains that climb to the crate root. `depth`: how deep the stream's module is.
fn named_modules(tokens: TokenStream, depth: usize, out: &mut BTreeSet<String>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            // `mod name { ... }`: one level deeper.
            TokenTree::Ident(id) if id == "mod" => {
                if let (Some(TokenTree::Ident(_)), Some(TokenTree::Group(g))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    if g.delimiter() == Delimiter::Brace {
                        named_modules(g.stream(), depth + 1, out);
                        i += 3;
                        continue;
                    }
                }
            }
            TokenTree::Ident(id) if id == "crate" => {
                path_root(&tokens[i + 1..], out);
            }
            TokenTree::Ident(id) if id == "super" => {
                // Count the `super::` in a row; climbing `depth` of them reaches the root.
                let mut j = i;
                let mut ups = 0;
                while matches!(&tokens.get(j), Some(TokenTree::Ident(s)) if s == "super")
                    && is_path_sep(&tokens[j + 1..])
                {
                    ups += 1;
                    j += 3;
                }
                if ups > 0 && ups == depth {
                    path_root(&tokens[j - 2..], out);
                }
                i = j.max(i + 1);
                continue;
            }
            TokenTree::Group(g) => named_modules(g.stream(), depth, out),
            _ => {}
        }
        i += 1;
    }
}

fn is_path_sep(tokens: &[TokenTree]) -> bool {
    matches!(
        (tokens.first(), tokens.get(1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':'
    )
}

/// After a path's root (`crate`, or the last `super`): `::name` or `::{a, b::c}`.
fn path_root(after: &[TokenTree], out: &mut BTreeSet<String>) {
    if !is_path_sep(after) {
        return;
    }
    match after.get(2) {
        Some(TokenTree::Ident(name)) => {
            out.insert(name.to_string());
        }
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
            let mut first = true;
            for t in g.stream() {
                match t {
                    TokenTree::Ident(name) if first => {
                        out.insert(name.to_string());
                        first = false;
                    }
                    TokenTree::Punct(p) if p.as_char() == ',' => first = true,
                    _ => first = false,
                }
            }
        }
        _ => {}
    }
}

#[test]
fn no_top_level_module_reaches_a_module_that_imports_it() {
    let sources = sources();
    let tops: BTreeSet<String> = sources
        .iter()
        .filter_map(|s| s.module.first().cloned())
        .collect();
    // from -> to -> the files that import it.
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for s in &sources {
        let Some(from) = s.module.first() else {
            continue; // the crate root declares the modules
        };
        let tokens: TokenStream = s.text.parse().unwrap();
        let mut named = BTreeSet::new();
        named_modules(tokens, s.module.len(), &mut named);
        for to in named.into_iter().filter(|t| tops.contains(t) && t != from) {
            edges
                .entry(from.clone())
                .or_default()
                .entry(to)
                .or_default()
                .insert(s.rel.clone());
        }
    }
    assert!(
        edges.get("sink").is_some_and(|e| e.contains_key("outbox")),
        "the scan must see sink -> outbox: {edges:?}"
    );
    // A circle is a path back to where it started.
    let mut circles = String::new();
    for start in edges.keys() {
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in edges.get(&at).into_iter().flat_map(BTreeMap::keys) {
                if next == start {
                    let mut hops = String::new();
                    for pair in path
                        .iter()
                        .chain(std::iter::once(start))
                        .collect::<Vec<_>>()
                        .windows(2)
                    {
                        let files = &edges[pair[0]][pair[1]];
                        let _ = write!(hops, "\n    {} -> {} ({files:?})", pair[0], pair[1]);
                    }
                    let _ = writeln!(circles, "{start}:{hops}");
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles between top-level modules of src/:\n{circles}"
    );
}

/// Collects each function's length: from its `fn` line to its closing brace.
struct Functions<'a> {
    rel: &'a str,
    long: Vec<String>,
    count: usize,
    /// (lines, where) of the longest.
    longest: (usize, String),
}

impl Functions<'_> {
    fn check(&mut self, name: &syn::Ident, sig: &syn::Signature, block: &syn::Block) {
        self.count += 1;
        let lines = block.span().end().line - sig.span().start().line + 1;
        let at = format!("{}:{} fn {name}", self.rel, sig.span().start().line);
        self.longest = self.longest.clone().max((lines, at));
        if lines > MAX_FN_LINES {
            self.long.push(format!(
                "{}:{} fn {name}: {lines} lines",
                self.rel,
                sig.span().start().line
            ));
        }
    }
}

impl<'ast> Visit<'ast> for Functions<'_> {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.check(&f.sig.ident, &f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.check(&f.sig.ident, &f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.check(&f.sig.ident, &f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

#[test]
fn no_function_in_src_is_longer_than_120_lines() {
    let mut long = Vec::new();
    let mut count = 0;
    let mut longest = (0, String::new());
    for s in sources() {
        let mut v = Functions {
            rel: &s.rel,
            long: Vec::new(),
            count: 0,
            longest: (0, String::new()),
        };
        v.visit_file(&s.file);
        long.extend(v.long);
        count += v.count;
        longest = longest.max(v.longest);
    }
    eprintln!(
        "{count} functions; the longest: {} ({} lines)",
        longest.1, longest.0
    );
    assert!(count > 500, "the scan must see the functions (saw {count})");
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// Whether an item is compiled for tests only (`#[cfg(test)]`).
fn test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// Lines of a file outside its `#[cfg(test)]` items.
fn non_test_lines(s: &Source) -> usize {
    let total = s.text.lines().count();
    let tests: usize = s
        .file
        .items
        .iter()
        .filter(|item| match item {
            syn::Item::Mod(m) => test_only(&m.attrs),
            syn::Item::Fn(f) => test_only(&f.attrs),
            syn::Item::Impl(i) => test_only(&i.attrs),
            syn::Item::Use(u) => test_only(&u.attrs),
            _ => false,
        })
        .map(|item| item.span().end().line - item.span().start().line + 1)
        .sum();
    total - tests
}

#[test]
fn no_file_in_src_has_more_than_700_lines_outside_its_tests() {
    let sources = sources();
    let with_tests = sources
        .iter()
        .find(|s| s.rel.ends_with("sink/mqtt/publisher.rs"))
        .expect("publisher.rs");
    assert!(
        non_test_lines(with_tests) < with_tests.text.lines().count(),
        "the count must leave tests out"
    );
    if let Some((s, n)) = sources
        .iter()
        .map(|s| (s, non_test_lines(s)))
        .max_by_key(|(_, n)| *n)
    {
        eprintln!("the largest file: {} ({n} lines outside tests)", s.rel);
    }
    let big: Vec<String> = sources
        .iter()
        .map(|s| (s, non_test_lines(s)))
        .filter(|(_, n)| *n > MAX_FILE_LINES)
        .map(|(s, n)| format!("{}: {n} lines outside tests", s.rel))
        .collect();
    assert!(
        big.is_empty(),
        "files over {MAX_FILE_LINES} lines of non-test code:\n{}",
        big.join("\n")
    );
}

/// The repository's top-level entries: a named path that starts with one is taken as one of
/// the repository's files.
fn repo_entries() -> BTreeSet<String> {
    std::fs::read_dir(root())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "target" && n != ".git")
        .collect()
}

/// `a/{b, c}.rs` -> `a/b.rs`, `a/c.rs`.
fn expand_braces(path: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (path.find('{'), path.find('}')) else {
        return vec![path.to_string()];
    };
    if close < open {
        return vec![path.to_string()];
    }
    path[open + 1..close]
        .split(',')
        .flat_map(|alt| {
            expand_braces(&format!(
                "{}{}{}",
                &path[..open],
                alt.trim(),
                &path[close + 1..]
            ))
        })
        .collect()
}

/// What the docs' paths are checked against: the repository's top-level entries and the
/// names of all its files.
struct Repo {
    entries: BTreeSet<String>,
    file_names: BTreeSet<String>,
}

impl Repo {
    fn read() -> Repo {
        let entries = repo_entries();
        let mut file_names = BTreeSet::new();
        let mut todo: Vec<PathBuf> = entries.iter().map(|e| root().join(e)).collect();
        while let Some(path) = todo.pop() {
            if path.is_dir() {
                let skip = path.ends_with("target") || path.ends_with(".git");
                if !skip {
                    todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                }
            } else if let Some(name) = path.file_name() {
                file_names.insert(name.to_string_lossy().into_owned());
            }
        }
        Repo {
            entries,
            file_names,
        }
    }
}

/// Extensions of the repository's own files: a bare file name with one of these (`lines.rs`)
/// names a file of the repository, which must exist somewhere in it.
const SOURCE_EXTENSIONS: [&str; 9] = ["rs", "md", "sh", "js", "css", "html", "py", "yml", "json"];

/// The paths a Markdown text names, `(line, path as written, paths it may be)`:
/// - link targets, relative to `dir` (the file's folder);
/// - code spans (and words of fenced blocks) that start with a repository entry
///   (`src/app.rs`), relative to the root, or, in a nested README, with an entry of its
///   folder (firmware/README.md's `src/i2c.rs`), relative to the root or that folder;
/// - code spans of a module's file without `src/` (`sink/mqtt/acks.rs`), relative to `src/`;
/// - bare file names of the repository's own kinds (`lines.rs`): anywhere in it.
fn named_paths(text: &str, dir: &Path, repo: &Repo) -> Vec<(usize, String, Vec<PathBuf>)> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        // Links: `](target)`.
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split('#').next().unwrap_or("").trim();
            rest = &rest[end..];
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            out.push((n, target.to_string(), vec![dir.join(target)]));
        }
        let candidates: Vec<&str> = if in_fence {
            line.split_whitespace().collect()
        } else {
            line.split('`').skip(1).step_by(2).collect()
        };
        for c in candidates {
            let c = c
                .trim_matches(|ch: char| matches!(ch, '"' | '\'' | ',' | ';' | '(' | ')'))
                .trim_start_matches("./");
            // `file.rs:42`.
            let c = c.split(':').next().unwrap_or(c);
            let outside_braces: String = c
                .split('{')
                .map(|p| p.rsplit('}').next().unwrap_or(p))
                .collect();
            if c.is_empty() || c.contains(['<', '*', '$', '=']) || outside_braces.contains(' ') {
                continue;
            }
            let first = c.split('/').next().unwrap_or("");
            let extension = c.rsplit_once('.').map(|(_, e)| e);
            // A nested README (firmware/, fuzz/) names its own crate's files from its folder.
            let nested = dir != root();
            let dir_first = !first.is_empty() && dir.join(first).exists();
            for path in expand_braces(c) {
                let places = if (repo.entries.contains(first) || (nested && dir_first))
                    && (c.contains('/') || c.contains('.'))
                {
                    vec![root().join(&path), dir.join(&path)]
                } else if c.contains('/') && !c.starts_with('/') && extension == Some("rs") {
                    vec![root().join("src").join(&path), dir.join("src").join(&path)]
                } else if !c.contains('/')
                    && !in_fence
                    && extension.is_some_and(|e| SOURCE_EXTENSIONS.contains(&e))
                {
                    match repo.file_names.contains(&path) {
                        true => continue,
                        false => vec![root().join(&path)],
                    }
                } else {
                    continue;
                };
                out.push((n, c.to_string(), places));
            }
        }
    }
    out
}

/// A file the docs tell the user to make (`deploy/.env`): git ignores it.
fn made_by_the_user(path: &Path) -> bool {
    std::process::Command::new("git")
        .args(["check-ignore", "-q"])
        .arg(path)
        .current_dir(root())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn every_path_named_in_the_repositorys_markdown_exists() {
    let repo = Repo::read();
    // README.md, docs/*.md, BENCHMARKS.md and every other Markdown file of the repository.
    let mut docs = Vec::new();
    let mut todo = vec![root()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap_or_default();
            if path.is_dir() {
                if name != "target" && name != ".git" {
                    todo.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "md") {
                docs.push(path);
            }
        }
    }
    docs.sort();
    assert!(docs.contains(&root().join("docs/ARCHITECTURE.md")));
    let mut missing = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        let rel = doc.strip_prefix(root()).unwrap().display().to_string();
        for (line, written, places) in named_paths(&text, doc.parent().unwrap(), &repo) {
            checked += 1;
            let said = format!("{rel}:{line}: {written}");
            let found = places.iter().any(|p| p.exists() || made_by_the_user(p));
            if !found && !missing.contains(&said) {
                missing.push(said);
            }
        }
    }
    assert!(
        checked > 50,
        "the scan must find the paths (found {checked})"
    );
    assert!(
        missing.is_empty(),
        "paths named in the docs that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_path_scan_finds_links_code_spans_and_brace_lists() {
    let repo = Repo {
        entries: ["src", "docs"].map(String::from).into(),
        file_names: ["lines.rs"].map(String::from).into(),
    };
    let text = "See [API](API.md#stream) and `src/mqtt/{topic, client}.rs`, \
                `iiot/node1/temperature`, [site](https://example.com), `src/app.rs:42`, \
                `sink/mqtt/acks.rs`, `lines.rs`, `gone.rs`, `/api/series`, `config.toml`.";
    let found: Vec<String> = named_paths(text, &root().join("docs"), &repo)
        .into_iter()
        .map(|(_, _, places)| {
            places[0]
                .strip_prefix(root())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        found,
        [
            "docs/API.md",
            "src/mqtt/topic.rs",
            "src/mqtt/client.rs",
            "src/app.rs",
            "src/sink/mqtt/acks.rs",
            "gone.rs"
        ]
    );
}
