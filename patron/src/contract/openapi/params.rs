//! Path and query parameters from `Path<T>` and `Query<T>` schemas.

use serde_json::{Map, Value, json};

use crate::describe::OperationParts;

/// One parameter per name in the route's path template, typed by the
/// `Path<T>` schema: a scalar for one parameter, a tuple by position, a
/// struct by name; a string where the handler does not say.
pub(super) fn path(names: &[String], described: &OperationParts<'_>) -> Vec<Value> {
    let schema = described.path.as_ref();
    let resolved = schema.map(|s| resolve(s, described));
    names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let typed = resolved.and_then(|r| {
                if let Some(items) = r.get("prefixItems").and_then(Value::as_array) {
                    items.get(index).cloned()
                } else if let Some(props) = r.get("properties").and_then(Value::as_object) {
                    props.get(name).cloned()
                } else if names.len() == 1 {
                    schema.cloned()
                } else {
                    None
                }
            });
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": typed.unwrap_or_else(|| json!({ "type": "string" })),
            })
        })
        .collect()
}

/// One parameter per property of the `Query<T>` schema, required where
/// the schema requires it; a schema without fixed properties (a map) is
/// one object parameter in form style, as OpenAPI describes free-form
/// query strings.
pub(super) fn query(described: &OperationParts<'_>) -> Vec<Value> {
    let Some(schema) = &described.query else {
        return Vec::new();
    };
    let resolved = resolve(schema, described);
    let props = resolved.get("properties").and_then(Value::as_object);
    let open = resolved
        .get("additionalProperties")
        .is_some_and(|a| a != &Value::Bool(false));
    match props {
        Some(props) if !open => {
            let required = resolved.get("required").and_then(Value::as_array);
            let required = |name: &str| required.is_some_and(|r| r.iter().any(|n| n == name));
            props
                .iter()
                .map(|(name, prop)| {
                    json!({
                        "name": name,
                        "in": "query",
                        "required": required(name),
                        "schema": prop,
                    })
                })
                .collect()
        }
        _ => vec![json!({
            "name": "query",
            "in": "query",
            "style": "form",
            "explode": true,
            "schema": schema,
        })],
    }
}

/// `schema`, or the definition its `$ref` names.
fn resolve<'a>(schema: &'a Value, described: &'a OperationParts<'_>) -> &'a Value {
    let target = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(super::SCHEMAS));
    let definitions: &Map<String, Value> = described.requests.definitions();
    match target.and_then(|name| definitions.get(name)) {
        Some(definition) => definition,
        None => schema,
    }
}
