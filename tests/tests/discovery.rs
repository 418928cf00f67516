//! Service discovery against real registries where one can run here:
//!
//! - etcd (`PATRON_TEST_ETCD_ENDPOINT`, started by `scripts/services`): the
//!   service registers once ready, lets its registration lapse while not
//!   ready and registers again when ready, and deregisters at the shutdown
//!   signal while its listener still accepts connections; `HttpClient`
//!   balances `http://{name}.discover` over the registered instances,
//!   follows the registry's changes and ejects an instance that refuses
//!   connections;
//! - DNS (dnsmasq, `PATRON_TEST_DNSMASQ`, started here on a loopback port
//!   with the SRV/A records each test writes);
//! - Consul: no Consul server can be installed here, so these tests run
//!   against `patron_tests::consul::ConsulDouble`, a **test double written
//!   from Consul's HTTP API documentation** (agent service registration with
//!   an HTTP check it really runs, health queries with blocking queries).

use std::sync::Arc;

use futures_util::FutureExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use patron::client::http::HttpClient;
use patron::config::{DiscoveryBackend, DiscoveryConfig};
use patron::discovery::{Discovery, Instance};
use patron::prelude::*;
use patron::test::TestServer;
use patron_tests::consul::ConsulDouble;
use patron_tests::{eventually, free_port, prom, unique};

#[patron::route(GET "/hello")]
async fn hello() -> &'static str {
    "hello"
}

/// Which test instance answered.
struct Tag(&'static str);

#[patron::route(GET "/who")]
async fn who(tag: Dep<Tag>) -> &'static str {
    tag.0
}

fn config(backend: DiscoveryBackend) -> DiscoveryConfig {
    DiscoveryConfig {
        backend,
        ttl: Duration::from_secs(3),
        address: Some("127.0.0.1".to_string()),
    }
}

/// A service named `name` answering `GET /who` with `tag`, registered in
/// `discovery` (when given).
async fn instance(
    name: &str,
    tag: &'static str,
    discovery: Option<&DiscoveryConfig>,
) -> TestServer {
    let mut service = Service::new(name).version("2.0.0").provide(Tag(tag));
    service.config_mut().discovery = discovery.cloned();
    TestServer::start(service).await.unwrap()
}

/// A service registered through `config` whose health check (and so
/// `/ready`) follows the returned flag; 2 s of shutdown delay.
async fn flippable(
    name: &str,
    version: &str,
    config: &DiscoveryConfig,
) -> (TestServer, Arc<AtomicBool>) {
    let up = Arc::new(AtomicBool::new(true));
    let check = Arc::clone(&up);
    let mut service = Service::new(name)
        .version(version.to_string())
        .provide(Tag("a"))
        .with_health_check("db", move || {
            let up = check.load(Ordering::SeqCst);
            async move { if up { Ok(()) } else { Err("db down") } }
        });
    service.config_mut().discovery = Some(config.clone());
    service.config_mut().shutdown_delay = Duration::from_secs(2);
    (TestServer::start(service).await.unwrap(), up)
}

/// `n` GETs of `/who` through `client` at `http://{name}.discover`: how
/// many each tag answered; any failure fails the test.
async fn spread(
    client: &HttpClient,
    name: &str,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..n {
        let response = client
            .send(client.request(http::Method::GET, &format!("http://{name}.discover/who")))
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(response.status(), 200);
        *seen.entry(response.text().await.unwrap()).or_default() += 1;
    }
    seen
}

fn etcd() -> Option<DiscoveryConfig> {
    let endpoint = patron_tests::service("PATRON_TEST_ETCD_ENDPOINT", "etcd")?;
    Some(config(DiscoveryBackend::Etcd(vec![endpoint])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_is_registered_only_while_ready_and_leaves_before_draining() {
    let Some(config) = etcd() else { return };
    let name = unique("disc");
    let (server, up) = flippable(&name, "1.2.3", &config).await;
    let registry = Discovery::new(&config).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_client_balances_over_etcd_instances_follows_changes_and_ejects_a_dead_one() {
    let Some(config) = etcd() else { return };
    let name = unique("bal");
    let a = instance(&name, "a", Some(&config)).await;
    let b = instance(&name, "b", Some(&config)).await;
    let registry = Discovery::new(&config).unwrap();
    let both = eventually(Duration::from_secs(5), || {
        let r = registry.clone();
        let name = name.clone();
        async move { r.resolve(&name).await.map(|i| i.len()).unwrap_or(0) == 2 }
    })
    .await;
    assert!(both, "both instances registered");

    let discovery = Discovery::new(&config).unwrap();
    let client = HttpClient::builder()
        .discovery(discovery.clone())
        .build()
        .unwrap();
    let seen = spread(&client, &name, 40).await;
    eprintln!("calls per instance: {seen:?}");
    assert_eq!(seen.len(), 2, "both instances answered: {seen:?}");
    assert!(seen.values().all(|n| *n >= 5), "spread over both: {seen:?}");
    assert_eq!(
        prom::global("discovery_instances", &[("service", &name)]),
        2.0
    );

    // A third instance appears in the registry (a closed port): the
    // client's watch adds it without a restart…
    let dead = Instance {
        service: name.clone(),
        id: "dead".into(),
        address: "127.0.0.1".into(),
        http_port: free_port(),
        grpc_port: None,
        version: "2.0.0".into(),
    };
    let lease = registry
        .registry()
        .register(&dead, Duration::from_secs(30), "")
        .await
        .unwrap();
    let three = eventually(Duration::from_secs(5), || {
        let n = discovery.known(&name).len();
        async move { n == 3 }
    })
    .await;
    assert!(three, "the watch saw the new instance");
    // …every call still succeeds (a refused connection is retried on
    // another instance), and after three refusals in a row it is ejected.
    let seen = spread(&client, &name, 40).await;
    assert_eq!(seen.values().sum::<usize>(), 40, "{seen:?}");
    assert!(!seen.contains_key("dead"));
    assert!(
        prom::global("discovery_ejections_total", &[("service", &name)]) >= 1.0,
        "the dead instance was ejected"
    );
    // Removed from the registry: the watch drops it.
    registry.registry().deregister(&lease).await.unwrap();
    let two = eventually(Duration::from_secs(5), || {
        let n = discovery.known(&name).len();
        async move { n == 2 }
    })
    .await;
    assert!(two, "the watch saw the instance leave");
    assert_eq!(
        prom::global("discovery_instances", &[("service", &name)]),
        2.0
    );
    assert!(
        prom::global(
            "discovery_resolutions_total",
            &[("service", &name), ("outcome", "ok")]
        ) >= 3.0
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_url_without_a_registry_or_without_instances_says_so() {
    let client = HttpClient::builder().build().unwrap();
    let err = client
        .send(client.request(http::Method::GET, "http://nothing.discover/x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"nothing\"") && err.contains("PATRON_DISCOVERY"),
        "{err}"
    );
    let Some(config) = etcd() else { return };
    let client = HttpClient::builder()
        .discovery(Discovery::new(&config).unwrap())
        .build()
        .unwrap();
    let name = unique("none");
    let err = client
        .send(client.request(http::Method::GET, &format!("http://{name}.discover/x")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&name) && err.contains("the registry lists none"),
        "{err}"
    );
}

/// dnsmasq on a loopback port answering for `*.test` with `records`
/// (dnsmasq options such as `--srv-host=…`); killed when dropped.
struct Dnsmasq {
    child: std::process::Child,
    port: u16,
}

impl Dnsmasq {
    /// dnsmasq on a free port. A port found free over TCP may be taken over
    /// UDP, or taken by another test before dnsmasq binds it: dnsmasq then
    /// exits at once, and another port is tried.
    fn start_anywhere(records: &[String]) -> Option<Dnsmasq> {
        let bin = patron_tests::service("PATRON_TEST_DNSMASQ", "dnsmasq")?;
        let mut said = String::new();
        for _ in 0..5 {
            match Self::spawn(&bin, free_port(), records) {
                Ok(dns) => return Some(dns),
                Err(e) => said = e,
            }
        }
        panic!("dnsmasq did not start on any of 5 free ports: {said}");
    }

    /// dnsmasq on `port` again (after the previous one was dropped), retried
    /// for up to 2 s while the port is released.
    fn restart(port: u16, records: &[String]) -> Dnsmasq {
        let bin = patron_tests::service("PATRON_TEST_DNSMASQ", "dnsmasq").expect("dnsmasq");
        let mut said = String::new();
        for _ in 0..10 {
            match Self::spawn(&bin, port, records) {
                Ok(dns) => return dns,
                Err(e) => said = e,
            }
        }
        panic!("dnsmasq did not start again on port {port}: {said}");
    }

    /// Starts dnsmasq and waits 200 ms: still running, it has bound its
    /// port; exited, its stderr says why.
    fn spawn(bin: &str, port: u16, records: &[String]) -> Result<Dnsmasq, String> {
        let mut child = std::process::Command::new(bin)
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--local=/test/",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--user=root",
                &format!("--port={port}"),
            ])
            .args(records)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start dnsmasq");
        std::thread::sleep(Duration::from_millis(200));
        match child.try_wait() {
            Ok(None) => Ok(Dnsmasq { child, port }),
            _ => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                let _ = child.wait();
                Err(format!("port {port}: {}", stderr.trim()))
            }
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_srv_and_a_records_from_a_real_dns_server_are_balanced_over_and_followed() {
    let a = instance("dns-svc", "a", None).await;
    let b = instance("dns-svc", "b", None).await;
    let c = instance("dns-svc", "c", None).await;
    let srv = |name: &str, server: &TestServer| {
        format!(
            "--srv-host=_http._tcp.inv.test,{name}.hosts.test,{}",
            server.addr().port()
        )
    };
    let hosts = [
        "--host-record=a.hosts.test,127.0.0.1".to_string(),
        "--host-record=b.hosts.test,127.0.0.1".to_string(),
        "--host-record=plain.test,127.0.0.1".to_string(),
    ];
    let mut records = vec![srv("a", &a), srv("b", &b)];
    records.extend(hosts.iter().cloned());
    let Some(dns) = Dnsmasq::start_anywhere(&records) else {
        return;
    };
    let port = dns.port;
    let config = config(DiscoveryBackend::Dns {
        server: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        domain: Some("test".into()),
        port: c.addr().port(),
    });
    let discovery = Discovery::new(&config).unwrap();
    let ready = eventually(Duration::from_secs(5), || {
        let d = discovery.clone();
        async move { d.resolve("inv").await.map(|i| i.len()).unwrap_or(0) == 2 }
    })
    .await;
    assert!(ready, "dnsmasq answers");
    let mut ports: Vec<u16> = discovery
        .resolve("inv")
        .await
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i.address, "127.0.0.1");
            i.http_port
        })
        .collect();
    ports.sort();
    let mut want = vec![a.addr().port(), b.addr().port()];
    want.sort();
    assert_eq!(ports, want, "the SRV records' ports");
    // No SRV records: the A record with the default port.
    let plain = discovery.resolve("plain").await.unwrap();
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].http_port, c.addr().port());
    assert!(discovery.resolve("absent").await.unwrap().is_empty());

    let client = HttpClient::builder()
        .discovery(discovery.clone())
        .build()
        .unwrap();
    let seen = spread(&client, "inv", 30).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["a", "b"], "{seen:?}");
    assert_eq!(
        spread(&client, "plain", 3).await.keys().collect::<Vec<_>>(),
        ["c"]
    );

    // The records change (b leaves, c joins): the poll follows.
    drop(dns);
    let mut records = vec![
        srv("a", &a),
        format!(
            "--srv-host=_http._tcp.inv.test,b.hosts.test,{}",
            c.addr().port()
        ),
    ];
    records.extend(hosts.iter().cloned());
    let _dns = Dnsmasq::restart(port, &records);
    let followed = eventually(Duration::from_secs(10), || {
        let ports: Vec<u16> = discovery.known("inv").iter().map(|i| i.http_port).collect();
        let want = c.addr().port();
        async move { ports.contains(&want) && ports.len() == 2 }
    })
    .await;
    assert!(
        followed,
        "the client follows the records: {:?}",
        discovery.known("inv")
    );
    let seen = spread(&client, "inv", 30).await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["a", "c"], "{seen:?}");

    // A service with DNS discovery registers nowhere: no discovery
    // component.
    let mut service = Service::new("dns-svc").provide(Tag("d"));
    service.config_mut().discovery = Some(config.clone());
    let d = TestServer::start(service).await.unwrap();
    let info = d
        .get("/info")
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    assert!(
        !info["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "discovery"),
        "{info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_registration_health_check_and_blocking_queries_against_a_double_of_its_documented_api()
 {
    let consul = ConsulDouble::start().await;
    let config = config(DiscoveryBackend::Consul {
        endpoint: consul.url.clone(),
        token: None,
    });
    let name = unique("consul");
    let (server, up) = flippable(&name, "3.1.4", &config).await;
    let port = server.addr().port();

    // Registered with an HTTP check on /ready, which the agent runs.
    let passing = eventually(Duration::from_secs(6), || {
        let ok = consul.services().values().any(|r| r.status == "passing");
        async move { ok }
    })
    .await;
    assert!(passing, "registered and passing: {:?}", consul.services());
    let services = consul.services();
    let (id, registered) = services.iter().next().unwrap();
    let body = &registered.body;
    assert_eq!(body["Name"], name.as_str());
    assert_eq!(body["Port"], port);
    assert_eq!(body["Address"], "127.0.0.1");
    assert_eq!(body["Meta"]["version"], "3.1.4");
    assert_eq!(
        body["Check"]["HTTP"],
        format!("http://127.0.0.1:{port}/ready")
    );
    assert_eq!(body["Check"]["Interval"], "1s");
    assert_eq!(body["Check"]["DeregisterCriticalServiceAfter"], "60s");

    let discovery = Discovery::new(&config).unwrap();
    let instances = discovery.resolve(&name).await.unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(
        (
            instances[0].id.as_str(),
            instances[0].http_port,
            instances[0].version.as_str()
        ),
        (id.as_str(), port, "3.1.4")
    );
    let client = HttpClient::builder()
        .discovery(discovery.clone())
        .build()
        .unwrap();
    assert_eq!(spread(&client, &name, 5).await.get("a"), Some(&5));

    // A blocking query returns when the check turns critical, not at its
    // wait.
    let snapshot = discovery
        .registry()
        .watch(&name, None, Duration::ZERO)
        .await
        .unwrap();
    let watching = {
        let d = discovery.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let next = d
                .registry()
                .watch(&name, Some(snapshot.index), Duration::from_secs(30))
                .await
                .unwrap();
            (next, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    up.store(false, Ordering::SeqCst);
    let (next, waited) = watching.await.unwrap();
    assert!(
        next.instances.is_empty(),
        "only passing instances: {next:?}"
    );
    assert!(next.index > snapshot.index);
    assert!(
        waited < Duration::from_secs(10),
        "woke on the change, after {waited:?}"
    );
    assert!(
        consul
            .calls()
            .iter()
            .any(|c| c.contains(&format!("index={}", snapshot.index)) && c.contains("wait=30s")),
        "{:?}",
        consul.calls()
    );
    up.store(true, Ordering::SeqCst);
    let back = eventually(Duration::from_secs(6), || {
        let d = discovery.clone();
        let name = name.clone();
        async move { d.resolve(&name).await.map(|i| i.len()).unwrap_or(0) == 1 }
    })
    .await;
    assert!(back, "passing again");

    // The shutdown signal deregisters while the listener still serves.
    server.begin_shutdown();
    let left = eventually(Duration::from_millis(1500), || {
        let gone = consul.services().is_empty();
        async move { gone }
    })
    .await;
    assert!(left, "deregistered at the signal: {:?}", consul.calls());
    assert!(
        consul
            .calls()
            .contains(&format!("PUT /v1/agent/service/deregister/{id}"))
    );
    assert_eq!(server.get("/hello").await.unwrap().status(), 200);
    server.join().await.unwrap();
}
