//! `patron new`'s checks and rendering; building what it writes, and the
//! linters, are in `patron-cli/tests/new.rs`.

use std::path::{Path, PathBuf};

use super::{NewError, Request};

fn request(name: &str, dir: &Path, with: &[&str]) -> Request {
    Request {
        name: name.to_string(),
        dir: Some(dir.to_path_buf()),
        with: with.iter().map(|s| s.to_string()).collect(),
        patron_path: None,
        vendor: false,
        force: false,
    }
}

/// The workspace root: this crate's parent directory.
fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("patron-cli sits in the workspace")
        .to_path_buf()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn bad_names_are_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "",
        "Orders",
        "9lives",
        "my_service",
        "orders-",
        "a b",
        &"x".repeat(64),
    ] {
        let dir = tmp.path().join("out");
        let err = request(name, &dir, &[]).run().unwrap_err();
        assert!(matches!(err, NewError::Name(_)), "{name:?}: {err}");
        assert!(err.to_string().contains("lowercase letters"), "{err}");
        assert!(!dir.exists(), "{name:?} wrote {}", dir.display());
    }
    for name in ["fn", "std", "test", "patron"] {
        let err = request(name, &tmp.path().join("out"), &[])
            .run()
            .unwrap_err();
        assert!(matches!(err, NewError::Reserved(_)), "{name:?}: {err}");
    }
}

#[test]
fn an_unknown_with_value_names_the_known_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("svc");
    let err = request("svc", &dir, &["amqp", "mongo"]).run().unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"mongo\"") && text.contains("amqp, kafka, sqs, sql, http-client, grpc"),
        "{text}"
    );
    assert!(!dir.exists());
}

#[test]
fn a_non_empty_directory_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
    let err = request("svc", tmp.path(), &[]).run().unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(entries(tmp.path()), 1, "nothing written");

    let mut forced = request("svc", tmp.path(), &[]);
    forced.force = true;
    forced.run().unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(tmp.path().join("Cargo.toml").exists());
}

#[test]
fn a_patron_path_without_patron_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut req = request("svc", &tmp.path().join("svc"), &[]);
    req.patron_path = Some(tmp.path().to_path_buf());
    let err = req.run().unwrap_err();
    assert!(err.to_string().contains("no patron checkout"), "{err}");
    assert!(!tmp.path().join("svc").exists());
}

#[test]
fn a_checkout_without_patron_dylib_is_refused() {
    // The generated manifest names `patron-dylib` by path; Cargo resolves
    // optional path dependencies too, so the crate would not build.
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    std::fs::create_dir_all(old.join("patron")).unwrap();
    std::fs::write(
        old.join("patron/Cargo.toml"),
        "[package]\nname = \"patron\"\n",
    )
    .unwrap();
    let mut req = request("svc", &tmp.path().join("svc"), &[]);
    req.patron_path = Some(old);
    let err = req.run().unwrap_err().to_string();
    assert!(
        err.contains("no patron checkout") && err.contains("patron-dylib"),
        "{err}"
    );
    assert!(!tmp.path().join("svc").exists());
}

#[test]
fn the_files_agree_with_the_runtime_defaults() {
    use patron_units::defaults;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("orders");
    let mut req = request(
        "orders",
        &dir,
        &["sql", "amqp", "kafka", "sqs", "http-client", "grpc", "amqp"],
    );
    req.patron_path = Some(checkout());
    let report = req.run().unwrap().to_string();
    assert!(report.contains("wrote 13 files"), "{report}");

    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    let cargo = read("Cargo.toml");
    assert!(cargo.contains("name = \"orders\""), "{cargo}");
    assert!(
        cargo.contains(
            "features = [\"openapi\", \"amqp\", \"kafka\", \"sqs\", \"sql\", \"http-client\", \"grpc\"]"
        ),
        "{cargo}"
    );
    let patron = checkout().join("patron").canonicalize().unwrap();
    assert!(
        cargo.contains(&format!("path = \"{}\"", patron.display())),
        "{cargo}"
    );
    // The opt-in shared library, from the same checkout.
    let dylib = patron.with_file_name("patron-dylib");
    assert!(
        cargo.contains(&format!(
            "patron-dylib = {{ path = \"{}\", optional = true }}",
            dylib.display()
        )) && cargo.contains("dynamic-linking = [\"dep:patron-dylib\"]"),
        "{cargo}"
    );
    // The workspace's own profiles, setting for setting, in order: the
    // CLI's build tests reuse the workspace's artifacts only while they agree.
    let workspace = std::fs::read_to_string(checkout().join("Cargo.toml")).unwrap();
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with("[profile."))
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    let profiles = settings(&workspace);
    assert!(profiles.len() >= 6, "{profiles:?}");
    assert_eq!(settings(&cargo), profiles, "{cargo}");

    let main = read("src/main.rs");
    for needle in [
        // The line that links the shared library under the feature.
        "#[cfg(feature = \"dynamic-linking\")]\nuse patron_dylib as _;",
        "on_task",
        "on_event",
        "on_job",
        "db_now",
        "fetch",
        "#[patron::grpc",
        "#[patron::main]",
    ] {
        assert!(main.contains(needle), "{needle} missing from main.rs");
    }
    assert!(!main.contains("{{"), "an unfilled placeholder:\n{main}");

    let deployment = read("deploy/kubernetes/deployment.yaml");
    let port = defaults::HTTP_PORT.to_string();
    for needle in [
        format!("path: {}", defaults::ALIVE_PATH),
        format!("path: {}", defaults::READY_PATH),
        format!("containerPort: {port}"),
        format!("prometheus.io/path: {}", defaults::METRICS_PATH),
        format!("value: \"{}s\"", defaults::SHUTDOWN_TIMEOUT_SECS),
        format!(
            "terminationGracePeriodSeconds: {}",
            5 + defaults::SHUTDOWN_TIMEOUT_SECS + 10
        ),
        "name: orders-secrets".to_string(),
        format!("containerPort: {}", defaults::GRPC_PORT),
    ] {
        assert!(
            deployment.contains(&needle),
            "{needle} missing:\n{deployment}"
        );
    }
    let dockerfile = read("Dockerfile");
    // The link script the Dockerfile names is written beside it, whole,
    // and the build makes the v0 symbol names its patterns are written in.
    assert!(
        dockerfile.contains("-C link-arg=-Wl,-T,link/hot-text.ld"),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains(r#"--config 'build.rustflags=["-Csymbol-mangling-version=v0"]'"#),
        "{dockerfile}"
    );
    let hot = read("link/hot-text.ld");
    assert!(hot.contains("  .text.hot : {"), "{hot}");
    assert!(hot.contains("    *(\n      .text._R"), "{hot}");
    assert!(hot.trim_end().ends_with("INSERT BEFORE .text;"), "{hot}");
    assert!(
        dockerfile.contains(&format!("EXPOSE {port} {}", defaults::GRPC_PORT)),
        "{dockerfile}"
    );
    assert!(read("proto/orders.proto").contains("package orders.v1;"));
    assert!(read("build.rs").contains("proto/orders.proto"));
    assert!(
        dockerfile.contains(&format!("EXPOSE {port}")),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains(defaults::BUILD_VERSION_VAR),
        "{dockerfile}"
    );
    for file in [
        "README.md",
        "Dockerfile",
        "deploy/kubernetes/service.yaml",
        "build.rs",
    ] {
        assert!(
            !read(file).contains("{{"),
            "an unfilled placeholder in {file}"
        );
    }
}

#[test]
fn without_a_path_the_released_version_is_the_dependency() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plain");
    request("plain", &dir, &[]).run().unwrap();
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(
        cargo.contains(&format!(
            "patron = {{ version = \"{}\", features = [\"openapi\"] }}",
            env!("CARGO_PKG_VERSION")
        )),
        "{cargo}"
    );
    assert!(!cargo.contains("sqlx"), "{cargo}");
}
