//! The schema generator settings both documents use: named types under
//! `#/components/schemas/`, integers with their Rust type's range.

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use serde_json::{Map, Value};

/// Where both documents keep named schemas.
pub(crate) const SCHEMAS: &str = "#/components/schemas/";

/// JSON Schema 2020-12, OpenAPI 3.1's dialect.
pub(crate) fn draft2020_12() -> SchemaSettings {
    with_ours(SchemaSettings::draft2020_12())
}

/// JSON Schema draft 07, what AsyncAPI 3.0's default schema format builds on.
pub(crate) fn draft07() -> SchemaSettings {
    with_ours(SchemaSettings::draft07())
}

fn with_ours(settings: SchemaSettings) -> SchemaSettings {
    settings
        .with(|s| s.definitions_path = SCHEMAS.into())
        .with_transform(RecursiveTransform(integer_range))
}

/// Gives integer schemas the range of their Rust type (schemars writes
/// only `format: uint64` and `minimum: 0`, and `format` asserts nothing in
/// JSON Schema 2020-12): a client reading the document learns that
/// `2^64` is refused, instead of finding out from a 422.
fn integer_range(schema: &mut schemars::Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let range: (Value, Value) = match object.get("format").and_then(Value::as_str) {
        Some("int8") => (i8::MIN.into(), i8::MAX.into()),
        Some("int16") => (i16::MIN.into(), i16::MAX.into()),
        Some("int32") => (i32::MIN.into(), i32::MAX.into()),
        Some("int64") | Some("int") => (i64::MIN.into(), i64::MAX.into()),
        Some("uint8") => (0.into(), u8::MAX.into()),
        Some("uint16") => (0.into(), u16::MAX.into()),
        Some("uint32") => (0.into(), u32::MAX.into()),
        Some("uint64") | Some("uint") => (0.into(), u64::MAX.into()),
        _ => return,
    };
    if !object.contains_key("minimum") && !object.contains_key("exclusiveMinimum") {
        object.insert("minimum".into(), range.0);
    }
    if !object.contains_key("maximum") && !object.contains_key("exclusiveMaximum") {
        object.insert("maximum".into(), range.1);
    }
}

/// `base`, or `base2`, `base3`… the first name `taken` refuses not: the key
/// a document gives a component whose natural name is in use.
pub(crate) fn free_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}{i}"))
        .find(|n| !taken(n))
        .unwrap_or_else(|| base.to_string())
}

/// Adds `serialized` (a type's schemas as it serializes) to `merged` (as
/// it deserializes). A name both hold with different schemas, or one of
/// `reserved`, keeps `merged`'s; the serialized side's is renamed
/// `{name}{suffix}` (or the next free name), with every reference to it in
/// `serialized` and in `users` rewritten.
pub(crate) fn merge_twins(
    merged: &mut Map<String, Value>,
    mut serialized: Map<String, Value>,
    users: &mut [&mut Value],
    suffix: &str,
    reserved: &[&str],
) {
    let names: Vec<String> = serialized.keys().cloned().collect();
    for name in names {
        let clash = reserved.contains(&name.as_str())
            || merged
                .get(&name)
                .is_some_and(|d| Some(d) != serialized.get(&name));
        if clash {
            let to = free_name(&format!("{name}{suffix}"), |n| {
                merged.contains_key(n) || serialized.contains_key(n) || reserved.contains(&n)
            });
            rename(&mut serialized, users, &name, &to);
        }
    }
    merged.extend(serialized);
}

/// Renames definition `from` to `to` in `defs`, and every reference to it
/// in `defs` and `users`.
pub(crate) fn rename(
    defs: &mut Map<String, Value>,
    users: &mut [&mut Value],
    from: &str,
    to: &str,
) {
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
