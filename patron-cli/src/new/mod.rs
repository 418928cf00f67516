//! `patron new`: checks everything it was given before it writes a file
//! (a bad name, an unknown `--with`, a directory in the way: nothing is
//! written), renders the template, writes it, then runs `git init` when
//! git is present and `cargo vendor` when asked.

mod render;
mod with;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) use with::With;

/// What `patron new` was asked to do (its command line).
#[derive(Debug, clap::Args)]
pub(crate) struct Request {
    /// The crate's name: lowercase letters, digits and `-`, starting with a
    /// letter (it also names the container and the Kubernetes objects).
    pub name: String,
    /// Where to write it (default: `./NAME`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// What the service uses besides HTTP, comma-separated: amqp, kafka,
    /// sqs, sql, http-client, grpc.
    #[arg(long, value_delimiter = ',')]
    pub with: Vec<String>,
    /// A patron checkout to depend on by path instead of the released
    /// version this tool was built with.
    #[arg(long)]
    pub patron_path: Option<PathBuf>,
    /// Run `cargo vendor` and configure the crate to build from `vendor/`
    /// offline.
    #[arg(long)]
    pub vendor: bool,
    /// Write into a directory that is not empty, replacing the files the
    /// template writes.
    #[arg(long)]
    pub force: bool,
}

/// Why a crate was not written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NewError {
    #[error(
        "invalid service name {0:?}: use lowercase letters, digits and '-', starting with a letter and not ending with '-', at most 63 characters (it names the crate, the container and the Kubernetes objects)"
    )]
    Name(String),
    #[error("invalid service name {0:?}: it is a Rust keyword or a standard crate's name")]
    Reserved(String),
    #[error("unknown --with value {given:?}; expected any of {expected}")]
    With { given: String, expected: String },
    #[error("{0} exists and is not empty; choose another --dir or pass --force to write into it")]
    NotEmpty(PathBuf),
    #[error("--patron-path {path}: no patron checkout there ({reason})")]
    PatronPath { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` in {dir} failed: {reason}")]
    Tool {
        command: String,
        dir: PathBuf,
        reason: String,
    },
}

/// What was written, for the user.
#[derive(Debug)]
pub(crate) struct Report {
    dir: PathBuf,
    files: usize,
    git: bool,
    vendored: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = self.dir.display();
        write!(f, "wrote {} files to {dir}", self.files)?;
        if self.git {
            write!(f, " (git repository initialised)")?;
        }
        if self.vendored {
            write!(f, "; dependencies vendored in {dir}/vendor")?;
        }
        write!(
            f,
            "\n\nnext:\n  cd {dir}\n  cargo run     # serves on http://localhost:{}\n  cargo test",
            patron_units::defaults::HTTP_PORT
        )
    }
}

impl Request {
    /// Checks the request, then writes the crate.
    pub(crate) fn run(self) -> Result<Report, NewError> {
        let plan = self.plan()?;
        for (relative, contents) in &plan.files {
            let path = plan.dir.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| NewError::Write {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&path, contents).map_err(|source| NewError::Write { path, source })?;
        }
        format_code(&plan.dir)?;
        let git = !plan.dir.join(".git").exists() && git_init(&plan.dir)?;
        if self.vendor {
            vendor(&plan.dir)?;
        }
        Ok(Report {
            dir: plan.dir,
            files: plan.files.len(),
            git,
            vendored: self.vendor,
        })
    }

    /// Everything checked and rendered; nothing written yet.
    fn plan(&self) -> Result<Plan, NewError> {
        check_name(&self.name)?;
        let with = With::parse_list(&self.with)?;
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.name));
        if !self.force && !is_empty_or_missing(&dir) {
            return Err(NewError::NotEmpty(dir));
        }
        let patron = match &self.patron_path {
            Some(path) => render::PatronDep::Checkout(checkout_root(path)?),
            None => render::PatronDep::Version(env!("CARGO_PKG_VERSION")),
        };
        let files = render::files(&render::Service {
            name: &self.name,
            with: &with,
            patron,
        });
        Ok(Plan { dir, files })
    }
}

struct Plan {
    dir: PathBuf,
    files: Vec<(String, String)>,
}

/// A crate name that is also a DNS label (Kubernetes object names).
fn check_name(name: &str) -> Result<(), NewError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes.last() != Some(&b'-')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !ok {
        return Err(NewError::Name(name.to_string()));
    }
    const RESERVED: &[&str] = &[
        "as",
        "async",
        "await",
        "break",
        "const",
        "continue",
        "crate",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "fn",
        "for",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "match",
        "mod",
        "move",
        "mut",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "type",
        "unsafe",
        "use",
        "where",
        "while",
        "abstract",
        "become",
        "box",
        "do",
        "final",
        "gen",
        "macro",
        "override",
        "priv",
        "try",
        "typeof",
        "unsized",
        "virtual",
        "yield",
        "alloc",
        "core",
        "proc-macro",
        "std",
        "test",
        "patron",
    ];
    if RESERVED.contains(&name) {
        return Err(NewError::Reserved(name.to_string()));
    }
    Ok(())
}

fn is_empty_or_missing(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// The root of a patron checkout (one with the `patron` crate), as an
/// absolute path, so that the new crate builds wherever it is written.
fn checkout_root(checkout: &Path) -> Result<PathBuf, NewError> {
    let fail = |reason: String| NewError::PatronPath {
        path: checkout.to_path_buf(),
        reason,
    };
    let root = checkout.canonicalize().map_err(|e| fail(e.to_string()))?;
    let manifest = root.join("patron").join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| fail(format!("{}: {e}", manifest.display())))?;
    if !text.lines().any(|l| l.trim() == "name = \"patron\"") {
        return Err(fail(format!(
            "{} is not patron's manifest",
            manifest.display()
        )));
    }
    let dylib = root.join("patron-dylib").join("Cargo.toml");
    if !dylib.is_file() {
        return Err(fail(format!(
            "{} is missing: the checkout predates `patron-dylib`",
            dylib.display()
        )));
    }
    Ok(root)
}

/// Runs rustfmt over the generated code when it is installed, so the crate
/// is as `cargo fmt` would leave it whatever the name's length.
fn format_code(dir: &Path) -> Result<(), NewError> {
    let mut files = vec![dir.join("src").join("main.rs")];
    if dir.join("build.rs").exists() {
        files.push(dir.join("build.rs"));
    }
    match Command::new("rustfmt")
        .args(["--edition", "2024"])
        .args(&files)
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(NewError::Tool {
            command: "rustfmt".into(),
            dir: dir.to_path_buf(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NewError::Tool {
            command: "rustfmt".into(),
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// `git init` when git is installed; `Ok(false)` when it is not.
fn git_init(dir: &Path) -> Result<bool, NewError> {
    match Command::new("git")
        .args(["init", "-q"])
        .current_dir(dir)
        .output()
    {
        Ok(out) if out.status.success() => Ok(true),
        Ok(out) => Err(NewError::Tool {
            command: "git init".into(),
            dir: dir.to_path_buf(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(NewError::Tool {
            command: "git init".into(),
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// `cargo vendor`, and the `.cargo/config.toml` it prints, so the crate
/// builds from `vendor/` without a registry (as Go modules' `vendor/`).
fn vendor(dir: &Path) -> Result<(), NewError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let fail = |reason: String| NewError::Tool {
        command: "cargo vendor".into(),
        dir: dir.to_path_buf(),
        reason,
    };
    let out = Command::new(cargo)
        .args(["vendor", "vendor"])
        .current_dir(dir)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let config = dir.join(".cargo").join("config.toml");
    std::fs::create_dir_all(dir.join(".cargo")).map_err(|source| NewError::Write {
        path: dir.join(".cargo"),
        source,
    })?;
    let mut text =
        String::from("# Written by `patron new --vendor`: build from vendor/, offline.\n");
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    std::fs::write(&config, text).map_err(|source| NewError::Write {
        path: config,
        source,
    })
}

#[cfg(test)]
mod tests;
