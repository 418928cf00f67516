use std::collections::HashMap;

use http::StatusCode;

use super::*;

/// Request counts of `http_server_request_duration_seconds` by status
/// label, for route `route`.
fn counts(metrics: &Metrics, route: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for family in metrics.registry.gather() {
        if family.name() != "http_server_request_duration_seconds" {
            continue;
        }
        for metric in family.get_metric() {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            if label("http_route") == route {
                let count = metric.get_histogram().get_sample_count();
                *out.entry(label("http_response_status_code")).or_default() += count;
            }
        }
    }
    out
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

#[test]
fn every_status_is_counted_past_the_cached_slots() {
    let metrics = Metrics::new();
    let http = HttpMetrics::register(&metrics).unwrap();
    let route = http.route("GET", "/items/{id}");
    // More distinct codes than slots: the first ones are cached, the rest
    // go through the label lookup; each is counted either way.
    let codes: Vec<u16> = (0..STATUS_SLOTS as u16 + 8).map(|i| 200 + i).collect();
    for (i, code) in codes.iter().enumerate() {
        for _ in 0..=i {
            route.observe("GET", status(*code), 0.001);
        }
    }
    let got = counts(&metrics, "/items/{id}");
    assert_eq!(got.len(), codes.len(), "{got:?}");
    for (i, code) in codes.iter().enumerate() {
        assert_eq!(
            got[&code.to_string()],
            i as u64 + 1,
            "status {code}: {got:?}"
        );
    }
    // The slots hold the first codes in the order they came.
    for (slot, code) in route.by_status.iter().zip(&codes) {
        assert_eq!(slot.get().map(|(c, _)| *c), Some(*code));
    }
}

#[test]
fn threads_racing_for_slots_lose_no_request() {
    let metrics = Metrics::new();
    let http = HttpMetrics::register(&metrics).unwrap();
    let route = http.route("POST", "/orders");
    let codes = [
        200u16, 201, 400, 404, 409, 422, 429, 500, 502, 503, 504, 418,
    ];
    std::thread::scope(|s| {
        for t in 0..8 {
            let route = &route;
            s.spawn(move || {
                for n in 0..500 {
                    let code = codes[(t + n) % codes.len()];
                    route.observe("POST", status(code), 0.002);
                }
            });
        }
    });
    let got = counts(&metrics, "/orders");
    assert_eq!(got.values().sum::<u64>(), 8 * 500, "{got:?}");
    for code in codes {
        let expected = (0..8)
            .map(|t| {
                (0..500)
                    .filter(|n| codes[(t + n) % codes.len()] == code)
                    .count() as u64
            })
            .sum::<u64>();
        assert_eq!(got[&code.to_string()], expected, "status {code}: {got:?}");
    }
    // Every filled slot holds a code that was sent (two threads can fill two
    // slots with one code at once; both count into the same child).
    for slot in &route.by_status {
        if let Some((code, _)) = slot.get() {
            assert!(codes.contains(code), "slot holds {code}");
        }
    }
}

#[test]
fn the_unmatched_route_labels_each_method() {
    let metrics = Metrics::new();
    let http = HttpMetrics::register(&metrics).unwrap();
    let unmatched = http.route("", "unmatched");
    unmatched.observe("GET", StatusCode::NOT_FOUND, 0.001);
    unmatched.observe("DELETE", StatusCode::NOT_FOUND, 0.001);
    assert!(unmatched.by_status.iter().all(|slot| slot.get().is_none()));
    let text = metrics.render();
    for method in ["GET", "DELETE"] {
        assert!(
            text.contains(&format!(
                "http_server_request_duration_seconds_count{{http_request_method=\"{method}\",http_response_status_code=\"404\",http_route=\"unmatched\"}} 1"
            )),
            "{method} missing in:\n{text}"
        );
    }
}

#[test]
fn a_route_handle_is_small() {
    // One slot per possible status code took 9.6 kB a route on the heap.
    assert!(
        std::mem::size_of::<RouteMetrics>() <= 512,
        "{} bytes",
        std::mem::size_of::<RouteMetrics>()
    );
}
