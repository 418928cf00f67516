//! The files of a new service, rendered from the templates under
//! `patron-cli/templates/`. Every value that must agree with patron's
//! runtime — the HTTP port, the probe and metrics paths, the shutdown
//! timeout, the build-time version variable — comes from
//! `patron_units::defaults`, the constants the runtime itself uses.

use std::path::PathBuf;

use patron_units::defaults;

use super::With;

/// How the new crate depends on patron.
#[derive(Debug)]
pub(crate) enum PatronDep {
    /// The released version this tool was built with.
    Version(&'static str),
    /// A checkout of patron's workspace (its absolute root): the crates
    /// `patron` and `patron-dylib` in it.
    Checkout(PathBuf),
}

/// What the templates are rendered for.
pub(crate) struct Service<'a> {
    pub name: &'a str,
    pub with: &'a [With],
    pub patron: PatronDep,
}

/// Seconds the pod's `preStop` hook waits before the process gets SIGTERM,
/// so that endpoints stop routing to it before it drains.
const PRE_STOP_SECONDS: u64 = 5;
/// Slack on top of the pre-stop wait and the shutdown timeout before
/// Kubernetes kills the pod.
const GRACE_MARGIN_SECONDS: u64 = 10;

/// Every file, by path relative to the crate's directory.
pub(crate) fn files(s: &Service<'_>) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = vec![
        ("Cargo.toml".to_string(), cargo_toml(s)),
        ("src/main.rs".to_string(), main_rs(s)),
        (
            "README.md".to_string(),
            fill(include_str!("../../templates/README.md"), s),
        ),
        (".gitignore".to_string(), "/target\n".to_string()),
        (
            ".dockerignore".to_string(),
            "target\n.git\ndeploy\n".to_string(),
        ),
        (
            "Dockerfile".to_string(),
            fill(include_str!("../../templates/Dockerfile"), s),
        ),
        // Recorded by patron's scripts/hot-text; the Dockerfile links with
        // it. No placeholders: it is written as it is.
        (
            "link/hot-text.ld".to_string(),
            include_str!("../../templates/link/hot-text.ld").to_string(),
        ),
        (
            "deploy/kubernetes/deployment.yaml".to_string(),
            fill(
                include_str!("../../templates/deploy/kubernetes/deployment.yaml"),
                s,
            ),
        ),
        (
            "deploy/kubernetes/service.yaml".to_string(),
            fill(
                include_str!("../../templates/deploy/kubernetes/service.yaml"),
                s,
            ),
        ),
        (
            "deploy/kubernetes/hpa.yaml".to_string(),
            fill(
                include_str!("../../templates/deploy/kubernetes/hpa.yaml"),
                s,
            ),
        ),
        (
            "deploy/kubernetes/pdb.yaml".to_string(),
            fill(
                include_str!("../../templates/deploy/kubernetes/pdb.yaml"),
                s,
            ),
        ),
    ];
    if s.with.contains(&With::Grpc) {
        files.push((
            "build.rs".to_string(),
            fill(include_str!("../../templates/grpc/build.rs"), s),
        ));
        files.push((
            format!("proto/{}.proto", s.name),
            fill(include_str!("../../templates/grpc/service.proto"), s),
        ));
    }
    files
}

/// Replaces the `{{…}}` placeholders.
fn fill(template: &str, s: &Service<'_>) -> String {
    let shutdown = defaults::SHUTDOWN_TIMEOUT_SECS;
    let grpc = s.with.contains(&With::Grpc);
    let (http, grpc_port) = (defaults::HTTP_PORT, defaults::GRPC_PORT);
    let pairs: [(&str, String); 16] = [
        ("{{name}}", s.name.to_string()),
        ("{{port}}", defaults::HTTP_PORT.to_string()),
        ("{{alive}}", defaults::ALIVE_PATH.to_string()),
        ("{{ready}}", defaults::READY_PATH.to_string()),
        ("{{metrics}}", defaults::METRICS_PATH.to_string()),
        ("{{shutdown_timeout}}", format!("{shutdown}s")),
        ("{{pre_stop}}", PRE_STOP_SECONDS.to_string()),
        (
            "{{grace}}",
            (PRE_STOP_SECONDS + shutdown + GRACE_MARGIN_SECONDS).to_string(),
        ),
        ("{{version_var}}", defaults::BUILD_VERSION_VAR.to_string()),
        ("{{env}}", k8s_env(s)),
        ("{{with_docs}}", with_docs(s)),
        ("{{pkg}}", s.name.replace('-', "_")),
        ("{{grpc_port}}", grpc_port.to_string()),
        (
            "{{expose}}",
            if grpc {
                format!("{http} {grpc_port}")
            } else {
                http.to_string()
            },
        ),
        (
            "{{container_ports}}",
            ports(
                grpc,
                "            - name: {name}\n              containerPort: {port}",
            ),
        ),
        (
            "{{service_ports}}",
            ports(
                grpc,
                "    - name: {name}\n      port: {service}\n      targetPort: {name}",
            ),
        ),
    ];
    let mut out = template.to_string();
    for (key, value) in pairs {
        out = out.replace(key, &value);
    }
    out
}

/// The port list of the Deployment or the Service: `{name}`, `{port}` and
/// `{service}` (the Service's port: 80 for HTTP) filled per port.
fn ports(grpc: bool, entry: &str) -> String {
    let mut list = vec![("http", defaults::HTTP_PORT, 80)];
    if grpc {
        list.push(("grpc", defaults::GRPC_PORT, defaults::GRPC_PORT));
    }
    list.iter()
        .map(|(name, port, service)| {
            entry
                .replace("{name}", name)
                .replace("{port}", &port.to_string())
                .replace("{service}", &service.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn cargo_toml(s: &Service<'_>) -> String {
    // The contract documents (/openapi.json, /asyncapi.json) are on.
    let features: Vec<String> = std::iter::once("openapi")
        .chain(s.with.iter().map(|w| w.feature()))
        .map(|f| format!("\"{f}\""))
        .collect();
    let features = format!(", features = [{}]", features.join(", "));
    // The service's `dynamic-linking` feature links patron from the shared
    // library `patron-dylib` (faster debug rebuilds; see main.rs).
    let (patron, dylib) = match &s.patron {
        PatronDep::Version(v) => (
            format!("patron = {{ version = \"{v}\"{features} }}"),
            format!("patron-dylib = {{ version = \"{v}\", optional = true }}"),
        ),
        PatronDep::Checkout(root) => (
            format!(
                "patron = {{ path = {}{features} }}",
                toml_string(&root.join("patron").display().to_string())
            ),
            format!(
                "patron-dylib = {{ path = {}, optional = true }}",
                toml_string(&root.join("patron-dylib").display().to_string())
            ),
        ),
    };
    let mut deps = vec![
        patron,
        dylib,
        // Body, query and payload types derive `schemars::JsonSchema` for the documents.
        "schemars = \"1\"".to_string(),
        "serde = { version = \"1\", features = [\"derive\"] }".to_string(),
        "tracing = \"0.1\"".to_string(),
    ];
    if s.with.contains(&With::Sql) {
        deps.push(
            "sqlx = { version = \"0.8\", default-features = false, features = [\"postgres\"] }"
                .to_string(),
        );
    }
    let mut build_deps = String::new();
    if s.with.contains(&With::Grpc) {
        deps.push("prost = \"0.14\"".to_string());
        deps.push("tonic = { version = \"0.14\", default-features = false, features = [\"codegen\", \"router\", \"server\", \"channel\"] }".to_string());
        deps.push("tonic-prost = \"0.14\"".to_string());
        build_deps = "\n[build-dependencies]\nprotoc-bin-vendored = \"3\"\ntonic-prost-build = { version = \"0.14\", default-features = false }\n".to_string();
    }
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n[features]\n# `cargo run --features dynamic-linking`: the debug build links patron from a\n# shared library, so a rebuild after an edit links in a fraction of the time.\n# For development only: build what you deploy without it.\ndynamic-linking = [\"dep:patron-dylib\"]\n\n[dependencies]\n{deps}\n{build_deps}\n[dev-dependencies]\ntokio = {{ version = \"1\", features = [\"macros\", \"rt\"] }}\n{PROFILES}",
        name = s.name,
        deps = deps.join("\n"),
    )
}

/// The build profiles a new service starts with: the workspace's own (a
/// test keeps them equal). Full debug info for some 400 dependencies makes
/// every debug build and link slower and `target/` several times larger, for
/// a debugger few services attach; line tables keep file and line in the
/// service's backtraces, and in the release build's CPU profiles
/// (`/debug/pprof/profile`).
const PROFILES: &str = include_str!("../../templates/profiles.toml");

fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `src/main.rs`: the route, a piece per `--with`, `main`, and tests.
fn main_rs(s: &Service<'_>) -> String {
    let mut code = String::new();
    // The pieces' own `use` lines, gathered under the prelude's.
    let mut uses = std::collections::BTreeSet::new();
    let mut provide = String::new();
    let mut tests = String::from(include_str!("../../templates/main/tests_head.rs"));
    for with in s.with {
        let (piece, test) = match with {
            With::Amqp => (
                include_str!("../../templates/main/amqp.rs"),
                include_str!("../../templates/main/amqp_test.rs"),
            ),
            With::Kafka => (
                include_str!("../../templates/main/kafka.rs"),
                include_str!("../../templates/main/kafka_test.rs"),
            ),
            With::Sqs => (
                include_str!("../../templates/main/sqs.rs"),
                include_str!("../../templates/main/sqs_test.rs"),
            ),
            With::Sql => {
                provide.push_str(
                    "    // PATRON_DATABASE_URL; lazy: start-up does not wait for the database.\n    let db = Db::from_config(service.current_config())?;\n    let service = service.with_client(db);\n",
                );
                (include_str!("../../templates/main/sql.rs"), "")
            }
            With::Grpc => {
                provide.push_str("    let service = service.provide(Greetings);\n");
                (
                    include_str!("../../templates/main/grpc.rs"),
                    include_str!("../../templates/main/grpc_test.rs"),
                )
            }
            With::HttpClient => {
                provide.push_str(
                    "    let service = service.provide(\n        HttpClient::builder()\n            .timeout(Duration::from_secs(5))\n            .build()?,\n    );\n",
                );
                (include_str!("../../templates/main/http_client.rs"), "")
            }
        };
        let mut lines = piece.lines().peekable();
        while let Some(line) = lines.next_if(|l| l.starts_with("use ") || l.is_empty()) {
            if !line.is_empty() {
                uses.insert(line);
            }
        }
        code.push('\n');
        for line in lines {
            code.push_str(line);
            code.push('\n');
        }
        tests.push_str(test);
    }
    // As rustfmt orders them: `std` first, then the rest sorted.
    let prelude = "use patron::prelude::*;\n";
    uses.insert(prelude.trim_end());
    let (std, rest): (Vec<&str>, Vec<&str>) = uses.iter().partition(|l| l.starts_with("use std::"));
    let mut imports = String::new();
    for group in [std, rest].iter().filter(|g| !g.is_empty()) {
        if !imports.is_empty() {
            imports.push('\n');
        }
        for line in group {
            imports.push_str(line);
            imports.push('\n');
        }
    }
    let head = include_str!("../../templates/main/head.rs").replace(prelude, &imports);
    code.insert_str(0, &head);
    code.push_str(&include_str!("../../templates/main/main.rs").replace("{{provide}}", &provide));
    let test_service = if s.with.contains(&With::Sql) {
        "        // The pool connects on first use: the greeting needs no database.\n        let mut service = Service::new(\"{{name}}\");\n        service.config_mut().database_url =\n            Some(patron::config::BrokerUrl::new(\"postgres://localhost/{{name}}\"));\n"
    } else {
        "        let service = Service::new(\"{{name}}\");\n"
    };
    let mut tests = tests.replace("{{test_service}}", test_service);
    tests.push_str("}\n");
    code.push('\n');
    code.push_str(&tests);
    fill(&code, s)
}

/// The container's `PATRON_*` environment in the Deployment.
fn k8s_env(s: &Service<'_>) -> String {
    let mut env = vec![
        (
            "PATRON_HTTP_DEFAULT_PORT",
            format!("\"{}\"", defaults::HTTP_PORT),
        ),
        (
            "PATRON_SHUTDOWN_TIMEOUT",
            format!("\"{}s\"", defaults::SHUTDOWN_TIMEOUT_SECS),
        ),
        ("PATRON_LOG_FORMAT", "json".to_string()),
        ("PATRON_LOG_LEVEL", "info".to_string()),
    ];
    let mut secrets = Vec::new();
    for with in s.with {
        match with {
            With::Amqp => secrets.push(("PATRON_AMQP_URL", "amqp-url")),
            With::Kafka => env.push(("PATRON_KAFKA_BROKERS", "kafka:9092".to_string())),
            With::Sqs => env.push(("AWS_REGION", "eu-west-1".to_string())),
            With::Sql => secrets.push(("PATRON_DATABASE_URL", "database-url")),
            With::HttpClient => {}
            With::Grpc => env.push(("PATRON_GRPC_PORT", format!("\"{}\"", defaults::GRPC_PORT))),
        }
    }
    let mut out = String::new();
    for (name, value) in env {
        out.push_str(&format!(
            "            - name: {name}\n              value: {value}\n"
        ));
    }
    for (name, key) in secrets {
        out.push_str(&format!(
            "            - name: {name}\n              valueFrom:\n                secretKeyRef:\n                  name: {}-secrets\n                  key: {key}\n",
            s.name
        ));
    }
    out.trim_end().to_string()
}

/// The README's lines on what `--with` added.
fn with_docs(s: &Service<'_>) -> String {
    let mut out = String::new();
    for with in s.with {
        let line = match with {
            With::Amqp => "- `on_task` consumes the RabbitMQ queue `tasks` (`PATRON_AMQP_URL`).".to_string(),
            With::Kafka => "- `on_event` consumes the Kafka topic `events` in a consumer group (`PATRON_KAFKA_BROKERS`).".to_string(),
            With::Sqs => "- `on_job` consumes the SQS queue `jobs` (AWS environment; `PATRON_SQS_ENDPOINT` for a local server).".to_string(),
            With::Sql => "- `GET /db/now` asks PostgreSQL for the time (`PATRON_DATABASE_URL`).".to_string(),
            With::HttpClient => "- `GET /fetch?url=…` fetches a page with the instrumented HTTP client.".to_string(),
            With::Grpc => format!(
                "- `Greetings` serves the gRPC service of `proto/{}.proto` on port {} (`build.rs` compiles it).",
                s.name,
                defaults::GRPC_PORT
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}
