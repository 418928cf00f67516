//! The document's named schemas: the request types' (as they deserialize)
//! and the response types' (as they serialize) in one
//! `components/schemas`, where a name both use for different schemas is
//! kept apart by renaming the response side's.

use schemars::SchemaGenerator;
use serde_json::{Map, Value};

/// Names patron's own components use.
const RESERVED: [&str; 1] = ["Problem"];

/// The merged definitions of both generators; `paths` has the references
/// of renamed response schemas rewritten.
pub(super) fn merge(
    requests: &mut SchemaGenerator,
    responses: &mut SchemaGenerator,
    paths: &mut Map<String, Value>,
) -> Map<String, Value> {
    let mut merged = requests.take_definitions(true);
    let response_defs = responses.take_definitions(true);
    for name in RESERVED {
        if merged.contains_key(name) {
            let to = free_name(name, &merged, &response_defs);
            let mut inputs = parts(paths, Side::Request);
            crate::contract::schemas::rename(&mut merged, &mut inputs, name, &to);
        }
    }
    let mut outputs = parts(paths, Side::Response);
    crate::contract::schemas::merge_twins(
        &mut merged,
        response_defs,
        &mut outputs,
        "Response",
        &RESERVED,
    );
    merged
}

/// `base`, or `base2`, `base3`… whichever neither map nor patron holds.
fn free_name(base: &str, a: &Map<String, Value>, b: &Map<String, Value>) -> String {
    crate::contract::schemas::free_name(base, |n| {
        a.contains_key(n) || b.contains_key(n) || RESERVED.contains(&n)
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Request,
    Response,
}

/// Where one side's schemas are used in every operation: parameters and
/// request bodies, or responses.
fn parts(paths: &mut Map<String, Value>, side: Side) -> Vec<&mut Value> {
    let mut out = Vec::new();
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            for (key, part) in op.iter_mut() {
                let request = key == "parameters" || key == "requestBody";
                if request == (side == Side::Request) && (request || key == "responses") {
                    out.push(part);
                }
            }
        }
    }
    out
}
