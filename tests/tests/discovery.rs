//! Registration in etcd (`PATRON_DISCOVERY=etcd://…`) against a real etcd
//! (`PATRON_TEST_ETCD_ENDPOINT`, started by `scripts/services`): the
//! service registers once ready, lets its registration lapse while not
//! ready and registers again when ready, and deregisters at the shutdown
//! signal while its listener still accepts connections.

use std::sync::Arc;

use futures_util::FutureExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use patron::config::{DiscoveryBackend, DiscoveryConfig};
use patron::discovery::Discovery;
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::{eventually, unique};

#[patron::route(GET "/hello")]
async fn hello() -> &'static str {
    "hello"
}

fn etcd() -> Option<DiscoveryConfig> {
    let endpoint = patron_tests::service("PATRON_TEST_ETCD_ENDPOINT", "etcd")?;
    Some(DiscoveryConfig {
        backend: DiscoveryBackend::Etcd(vec![endpoint]),
        ttl: Duration::from_secs(3),
        address: Some("127.0.0.1".to_string()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_is_registered_only_while_ready_and_leaves_before_draining() {
    let Some(config) = etcd() else { return };
    let name = unique("disc");
    let up = Arc::new(AtomicBool::new(true));
    let check = Arc::clone(&up);
    let mut service = Service::new(name.clone())
        .version("1.2.3")
        .with_health_check("db", move || {
            let up = check.load(Ordering::SeqCst);
            async move { if up { Ok(()) } else { Err("db down") } }
        });
    service.config_mut().discovery = Some(config.clone());
    service.config_mut().shutdown_delay = Duration::from_secs(2);
    let server = TestServer::start(service).await.unwrap();
    let registry = Discovery::new(&config);
    let count = |registry: Discovery, name: String| async move {
        registry
            .resolve(&name)
            .await
            .map(|i| i.len())
            .unwrap_or(usize::MAX)
    };

    let registered = eventually(Duration::from_secs(5), || {
        count(registry.clone(), name.clone()).map(|n| n == 1)
    })
    .await;
    assert!(registered, "registered once ready");
    let instances = registry.resolve(&name).await.unwrap();
    let me = &instances[0];
    assert_eq!(me.address, "127.0.0.1");
    assert_eq!(me.http_port, server.addr().port());
    assert_eq!(me.version, "1.2.3");

    // Not ready: the lease lapses within the TTL (3 s) plus a renewal period.
    up.store(false, Ordering::SeqCst);
    let started = Instant::now();
    let gone = eventually(Duration::from_secs(8), || {
        count(registry.clone(), name.clone()).map(|n| n == 0)
    })
    .await;
    assert!(gone, "a not-ready instance drops out");
    eprintln!(
        "dropped out {:?} after turning not ready",
        started.elapsed()
    );
    up.store(true, Ordering::SeqCst);
    let back = eventually(Duration::from_secs(5), || {
        count(registry.clone(), name.clone()).map(|n| n == 1)
    })
    .await;
    assert!(back, "registered again once ready");

    // The shutdown signal deregisters at once, while the listener (open for
    // PATRON_SHUTDOWN_DELAY) still answers.
    server.begin_shutdown();
    let left = eventually(Duration::from_millis(1500), || {
        count(registry.clone(), name.clone()).map(|n| n == 0)
    })
    .await;
    assert!(left, "deregistered at the signal");
    assert_eq!(
        server.get("/hello").await.unwrap().status(),
        200,
        "still serving while draining"
    );
    server.join().await.unwrap();
}
