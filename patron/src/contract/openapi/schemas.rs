//! The document's named schemas: the request types' (as they deserialize)
//! and the response types' (as they serialize) in one
//! `components/schemas`, where a name both use for different schemas is
//! kept apart by renaming the response side's.

use schemars::SchemaGenerator;
use serde_json::{Map, Value};

use super::SCHEMAS;

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
    let mut response_defs = responses.take_definitions(true);
    for name in RESERVED {
        if merged.contains_key(name) {
            let to = free_name(name, &merged, &response_defs);
            let mut inputs = parts(paths, Side::Request);
            rename(&mut merged, &mut inputs, name, &to);
        }
    }
    let names: Vec<String> = response_defs.keys().cloned().collect();
    for name in names {
        let clash = RESERVED.contains(&name.as_str())
            || merged
                .get(&name)
                .is_some_and(|d| Some(d) != response_defs.get(&name));
        if clash {
            let to = free_name(&format!("{name}Response"), &merged, &response_defs);
            let mut outputs = parts(paths, Side::Response);
            rename(&mut response_defs, &mut outputs, &name, &to);
        }
    }
    merged.extend(response_defs);
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

/// Renames definition `from` to `to` in `defs`, and every reference to it
/// in `defs` and `users`.
fn rename(defs: &mut Map<String, Value>, users: &mut [&mut Value], from: &str, to: &str) {
    if let Some(def) = defs.remove(from) {
        defs.insert(to.to_string(), def);
    }
    let (old, new) = (format!("{SCHEMAS}{from}"), format!("{SCHEMAS}{to}"));
    for def in defs.values_mut() {
        rewrite(def, &old, &new);
    }
    for user in users.iter_mut() {
        rewrite(user, &old, &new);
    }
}

fn rewrite(value: &mut Value, old: &str, new: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "$ref" && v.as_str() == Some(old) {
                    *v = Value::String(new.to_string());
                } else {
                    rewrite(v, old, new);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, old, new)),
        _ => {}
    }
}
