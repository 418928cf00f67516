//! The shape of `patron/src`, checked so it keeps holding: its top-level
//! modules form layers, each importing only its own layer and those below
//! (so there is no import cycle, and HTTP sits above the consumers, the
//! clients and observability instead of beneath them), and no source file
//! grows past the size a reader can hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// patron's top-level modules, lowest layer first. A module may name
/// (`crate::x`) modules of its own layer or a lower one.
const LAYERS: &[&[&str]] = &[
    &["context", "panic", "error", "config", "describe"],
    &["deps"],
    &["observe"],
    &["component"],
    &["reliability"],
    &["discovery"],
    &["client"],
    &["consumer"],
    &["cache"],
    &["http"],
    &["grpc"],
    &["contract"],
    &["service"],
    &["test"],
    &["__private", "lib"],
];

/// Longest source file, in lines.
const MAX_LINES: usize = 750;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../patron/src")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read patron/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("under patron/src");
    let first = rel
        .components()
        .next()
        .expect("a component")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// The code of a file without its comments and its test module.
fn production_code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module a piece of code names as `crate::name` or in
/// `crate::{name, other::…}`.
fn named_modules(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (i, m) in code.match_indices("crate::") {
        // `$crate::` in macros is the same crate; `patron_crate::` is not.
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + m.len()..];
        let Some(group) = rest.strip_prefix('{') else {
            names.push(ident(rest));
            continue;
        };
        // The group's top-level entries: split at commas outside braces.
        let (mut depth, mut start) = (0usize, 0usize);
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    names.push(ident(&group[start..j]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.push(ident(&group[start..j]));
                    start = j + 1;
                }
                _ => {}
            }
        }
    }
    names
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn modules_import_only_their_layer_and_below() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    assert!(all.len() > 50, "patron/src read: {} files", all.len());
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &all {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let module = module_of(file);
        let own = layer(&module)
            .unwrap_or_else(|| panic!("{module} (from {file:?}) is in no layer of LAYERS"));
        let code = production_code(&std::fs::read_to_string(file).expect("read a source file"));
        for named in named_modules(&code) {
            let Some(theirs) = layer(&named) else {
                // Items of lib.rs itself (`crate::Service`, `crate::Dep`).
                continue;
            };
            if theirs > own {
                wrong
                    .entry(format!("{}", file.display()))
                    .or_default()
                    .push(named);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "these files name modules of a higher layer (see LAYERS): {wrong:#?}"
    );
}

#[test]
fn no_source_file_is_over_the_limit() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let long: Vec<_> = all
        .iter()
        .map(|f| {
            let n = std::fs::read_to_string(f).expect("read").lines().count();
            (f.display().to_string(), n)
        })
        .filter(|(_, n)| *n > MAX_LINES)
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

/// The first fenced block of `lang` after `heading` in `text`.
fn block_after<'a>(text: &'a str, heading: &str, lang: &str) -> &'a str {
    let from = text
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} in README"));
    let fence = format!("```{lang}\n");
    let start = text[from..]
        .find(&fence)
        .unwrap_or_else(|| panic!("a {lang} block after {heading}"))
        + from
        + fence.len();
    let end = text[start..].find("```\n").expect("the block's end") + start;
    &text[start..end]
}

/// A file of the repository, by its path from the root.
fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn getting_started_shows_the_first_service_crate_as_it_is() {
    let readme = repo_file("README.md");
    let manifest = repo_file("examples/first-service/Cargo.toml");
    let main = repo_file("examples/first-service/src/main.rs");
    // The one line that differs: where patron is, from a new crate beside
    // a checkout rather than from inside the repository.
    let manifest = manifest.replace(
        r#"patron = { path = "../../patron","#,
        r#"patron = { path = "../patron/patron","#,
    );
    assert_eq!(
        block_after(&readme, "## Getting started", "toml"),
        manifest,
        "README's Cargo.toml is examples/first-service/Cargo.toml"
    );
    assert_eq!(
        block_after(&readme, "## Getting started", "rust,no_run"),
        main,
        "README's src/main.rs is examples/first-service/src/main.rs"
    );
}

#[test]
fn the_dynamic_linking_snippet_is_what_hello_and_patron_new_use() {
    let readme = repo_file("README.md");
    let heading = "### Faster debug rebuilds";
    // The code lines of the README's `main.rs` snippet: the ones that
    // build, in `hello` and in the crates `patron new` writes (whose build
    // test runs them with the feature on).
    let code = block_after(&readme, heading, "rust,ignore")
        .lines()
        .filter(|l| !l.starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        code,
        "#[cfg(feature = \"dynamic-linking\")]\nuse patron_dylib as _;"
    );
    for file in [
        "examples/examples/hello.rs",
        "patron-cli/templates/main/head.rs",
    ] {
        assert!(
            repo_file(file).contains(&code),
            "{file} lacks the README's lines"
        );
    }
    // The feature as the README declares it is the examples' (and the
    // tests crate's, which compiles hello.rs too).
    let toml = block_after(&readme, heading, "toml");
    let feature = toml
        .lines()
        .find(|l| l.starts_with("dynamic-linking = "))
        .expect("the feature in the README's Cargo.toml");
    for file in ["examples/Cargo.toml", "tests/Cargo.toml"] {
        assert!(
            repo_file(file).lines().any(|l| l == feature),
            "{file} lacks `{feature}`"
        );
    }
}
