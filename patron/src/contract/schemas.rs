//! The schema generator settings both documents use: named types under
//! `#/components/schemas/`, integers with their Rust type's range.

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use serde_json::Value;

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
