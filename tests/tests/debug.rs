//! The opt-in debug endpoints: off by default, a CPU profile that decodes as
//! pprof protobuf, behind the configured authenticator, and (in a child
//! process, where patron owns logging) a run-time log level change.

use std::time::Duration;

use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::{Proc, eventually};
use pprof::protos::Message;

const CUSTOM: &str = env!("CARGO_BIN_EXE_custom");

#[patron::route(GET "/work")]
async fn work() -> String {
    // Burn some CPU so the profile has samples from this process.
    let mut x: u64 = 1;
    for i in 0..5_000_000u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
    }
    x.to_string()
}

#[tokio::test]
async fn debug_endpoints_are_off_by_default() {
    let server = TestServer::start(Service::new("debug-off")).await.unwrap();
    let client = reqwest::Client::new();
    let profile = client
        .get(server.url("/debug/pprof/profile?seconds=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(profile.status(), 404);
    let level = client
        .post(server.url("/debug/log/debug"))
        .send()
        .await
        .unwrap();
    assert_eq!(level.status(), 404);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profile_is_valid_pprof_protobuf() {
    let server = TestServer::start(Service::new("debug-on").with_unauthenticated_debug_endpoints())
        .await
        .unwrap();
    let client = reqwest::Client::new();
    // Busy until the profile is back: a fixed number of requests could all
    // finish before sampling starts on a fast or idle machine (seen once in
    // CI: a profile with no samples).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let client = client.clone();
        let url = server.url("/work");
        let done = done.clone();
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client.get(&url).send().await;
            }
        })
    };
    let resp = client
        .get(server.url("/debug/pprof/profile?seconds=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let bytes = resp.bytes().await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let profile = pprof::protos::Profile::decode(bytes.as_ref()).expect("a pprof protobuf profile");
    assert!(!profile.sample_type.is_empty(), "sample types are declared");
    assert!(
        !profile.string_table.is_empty() && profile.string_table[0].is_empty(),
        "string table starts empty"
    );
    assert!(
        profile.duration_nanos >= 900_000_000,
        "about one second: {}",
        profile.duration_nanos
    );
    assert!(!profile.sample.is_empty(), "the busy handler was sampled");
    // The tables hold together: each sample's locations, each location's
    // functions, each function's names exist.
    let text = |i: i64| &profile.string_table[usize::try_from(i).unwrap()];
    for sample in &profile.sample {
        assert_eq!(sample.value.len(), 2, "samples and CPU time");
        assert_eq!(sample.value[1], sample.value[0] * profile.period);
        for id in &sample.location_id {
            let location = &profile.location[usize::try_from(*id).unwrap() - 1];
            assert_eq!(location.id, *id);
            for line in &location.line {
                let function = &profile.function[usize::try_from(line.function_id).unwrap() - 1];
                assert_eq!(function.id, line.function_id);
                assert!(!text(function.name).is_empty());
            }
        }
    }
    // The busy handler's frames point into this file.
    let files: Vec<&String> = profile.function.iter().map(|f| text(f.filename)).collect();
    assert!(
        files.iter().any(|f| f.ends_with("tests/debug.rs")),
        "a sampled frame is in this file: {files:?}"
    );
    load.await.unwrap();

    let bad = client
        .get(server.url("/debug/pprof/profile?seconds=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn debug_endpoints_use_the_configured_authenticator() {
    let svc = Service::new("debug-auth")
        .with_debug_endpoints()
        .with_debug_auth(ApiKey::new(["ops-key"]));
    let server = TestServer::start(svc).await.unwrap();
    let client = reqwest::Client::new();
    let denied = client
        .post(server.url("/debug/log/debug"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.headers()["www-authenticate"], "Apikey");
    // Authenticated, but this test process's logging is not patron's: 409 says so.
    let allowed = client
        .post(server.url("/debug/log/debug"))
        .header("authorization", "Apikey ops-key")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 409);
    let body: serde_json::Value = allowed.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not set up by patron"),
        "{body}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn log_level_changes_at_run_time() {
    let mut proc = Proc::spawn(CUSTOM, &[("PATRON_DEBUG_ENDPOINTS", "unauthenticated")]);
    proc.wait_alive().await;
    let client = reqwest::Client::new();
    let debug_lines = |p: &Proc| {
        p.json_logs()
            .iter()
            .filter(|l| l["level"] == "DEBUG")
            .count()
    };

    client
        .get(proc.url("/report?delay_ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(debug_lines(&proc), 0, "info level by default");

    let bad = client
        .post(proc.url("/debug/log/loud"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("trace, debug, info, warn, error"),
        "{body}"
    );

    let changed = client
        .post(proc.url("/debug/log/debug"))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(
        changed.json::<serde_json::Value>().await.unwrap()["level"],
        "debug"
    );
    client
        .get(proc.url("/report?delay_ms=1"))
        .send()
        .await
        .unwrap();
    let seen = eventually(Duration::from_secs(5), || {
        let n = debug_lines(&proc);
        async move { n > 0 }
    })
    .await;
    assert!(
        seen,
        "no debug line after switching to debug: {:?}",
        proc.stdout()
    );

    client
        .post(proc.url("/debug/log/warn"))
        .send()
        .await
        .unwrap();
    let before = proc.json_logs().len();
    client
        .get(proc.url("/report?delay_ms=1"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<_> = proc.json_logs().into_iter().skip(before).collect();
    assert!(
        after
            .iter()
            .all(|l| l["level"] == "WARN" || l["level"] == "ERROR"),
        "{after:?}"
    );
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Issue 17 item 6: debug endpoints switched on with no authenticator are
/// a start-up error naming both fixes, in code and by environment.
#[tokio::test]
async fn debug_endpoints_without_an_authenticator_refuse_to_start() {
    let err = TestServer::start(Service::new("debug-open").with_debug_endpoints())
        .await
        .expect_err("the service must not start")
        .to_string();
    assert!(
        err.contains("debug endpoints")
            && err.contains("with_debug_auth")
            && err.contains("PATRON_DEBUG_ENDPOINTS=unauthenticated"),
        "{err}"
    );
    let mut proc = Proc::spawn(CUSTOM, &[("PATRON_DEBUG_ENDPOINTS", "true")]);
    assert_eq!(
        proc.wait_exit(Duration::from_secs(20)),
        Some(1),
        "exits with an error"
    );
    let out = format!("{:?} {:?}", proc.stdout(), proc.stderr());
    assert!(out.contains("with_debug_auth"), "{out}");
}

/// Issue 17 item 6: opened on purpose, the start-up says so at WARN.
#[tokio::test]
async fn unauthenticated_debug_endpoints_warn_at_start() {
    let mut proc = Proc::spawn(CUSTOM, &[("PATRON_DEBUG_ENDPOINTS", "unauthenticated")]);
    proc.wait_alive().await;
    let warned = proc.json_logs().iter().any(|l| {
        l["level"] == "WARN"
            && l["fields"]["message"]
                .as_str()
                .or(l["message"].as_str())
                .is_some_and(|m| m.contains("without authentication"))
    });
    assert!(warned, "{:?}", proc.json_logs());
    proc.signal(libc::SIGTERM);
    assert_eq!(proc.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Issue 17 item 6: a profile whose client went away stops at once, so the
/// next one can start instead of meeting a busy profiler for 300 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_profile_stops_at_once() {
    let server =
        TestServer::start(Service::new("debug-abandon").with_unauthenticated_debug_endpoints())
            .await
            .unwrap();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let gave_up = impatient
        .get(server.url("/debug/pprof/profile?seconds=300"))
        .send()
        .await;
    assert!(gave_up.is_err(), "the 300 s profile cannot answer in 0.5 s");
    let client = reqwest::Client::new();
    let next = eventually(Duration::from_secs(10), || {
        let client = client.clone();
        let url = server.url("/debug/pprof/profile?seconds=1");
        async move {
            client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    assert!(next, "a new profile starts once the abandoned one stopped");
    server.shutdown().await.unwrap();
}
