//! What each extractor and response type adds to the document: bodies,
//! parameters and success responses with their schemas, as the code the
//! route macro generates would describe them.

use std::collections::HashMap;

use axum::extract::{Form, Path, Query};
use axum::{Json, body::Bytes};
use http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::route;
use crate::contract::openapi::document;
use crate::describe::{Operation, Probe, Undescribed as _};
use crate::http::registry::{RouteDef, RouteDoc};

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Order {
    /// What is ordered.
    item: String,
    quantity: u32,
    note: Option<String>,
}

#[derive(Serialize, JsonSchema)]
struct Accepted {
    id: u64,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Page {
    limit: u32,
    cursor: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct UserOrder {
    user: String,
    order: u64,
}

/// The same name on both sides, with a field only requests carry.
#[derive(Serialize, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Account {
    name: String,
    #[serde(skip_serializing)]
    password: String,
}

/// A user type whose name patron's problem schema has too.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Problem {
    code: u16,
}

fn with(mut route: RouteDef, describe: fn(&mut Operation<'_>)) -> RouteDef {
    route.doc = Some(RouteDoc {
        summary: None,
        description: None,
        tags: &[],
        deprecated: false,
        describe,
    });
    route
}

fn doc_of(routes: &[RouteDef]) -> Value {
    let refs: Vec<&RouteDef> = routes.iter().collect();
    document("svc", "1.0.0", &refs)
}

fn place(op: &mut Operation<'_>) {
    Probe::<Json<Order>>::new().describe_arg(op);
    Probe::<Json<Accepted>>::new().describe_output(op, "200");
}

#[test]
fn a_json_body_and_a_json_response_carry_their_schemas() {
    let doc = doc_of(&[with(route("POST", "/orders", "place"), place)]);
    let op = &doc["paths"]["/orders"]["post"];
    assert_eq!(op["requestBody"]["required"], true);
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Order"
    );
    let ok = &op["responses"]["200"];
    assert_eq!(
        ok["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Accepted"
    );
    assert!(op["responses"].get("2XX").is_none());
    let order = &doc["components"]["schemas"]["Order"];
    assert_eq!(order["type"], "object");
    assert_eq!(order["required"], json!(["item", "quantity"]));
    assert_eq!(
        order["properties"]["item"]["description"],
        "What is ordered."
    );
    assert_eq!(order["properties"]["quantity"]["minimum"], 0);
    assert_eq!(order["properties"]["quantity"]["maximum"], u32::MAX);
    assert_eq!(
        doc["components"]["schemas"]["Accepted"]["required"],
        json!(["id"])
    );
}

fn list(op: &mut Operation<'_>) {
    Probe::<Query<Page>>::new().describe_arg(op);
}

fn search(op: &mut Operation<'_>) {
    Probe::<Query<HashMap<String, String>>>::new().describe_arg(op);
}

#[test]
fn a_query_struct_is_one_parameter_per_field_and_a_map_is_free_form() {
    let doc = doc_of(&[
        with(route("GET", "/orders", "list"), list),
        with(route("GET", "/search", "search"), search),
    ]);
    let params = doc["paths"]["/orders"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let by_name: HashMap<&str, &Value> = params
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p))
        .collect();
    assert_eq!(by_name.len(), 2);
    assert_eq!(by_name["limit"]["in"], "query");
    assert_eq!(by_name["limit"]["required"], true);
    assert_eq!(by_name["limit"]["schema"]["type"], "integer");
    assert_eq!(by_name["cursor"]["required"], false);
    let free = &doc["paths"]["/search"]["get"]["parameters"][0];
    assert_eq!(free["in"], "query");
    assert_eq!(free["style"], "form");
    assert_eq!(free["explode"], true);
    assert_eq!(free["schema"]["type"], "object");
}

fn by_position(op: &mut Operation<'_>) {
    Probe::<Path<(String, u64)>>::new().describe_arg(op);
}

fn by_name(op: &mut Operation<'_>) {
    Probe::<Path<UserOrder>>::new().describe_arg(op);
}

fn scalar(op: &mut Operation<'_>) {
    Probe::<Path<u32>>::new().describe_arg(op);
}

#[test]
fn path_parameters_are_typed_by_position_by_name_or_alone() {
    let doc = doc_of(&[
        with(route("GET", "/a/{user}/{order}", "a"), by_position),
        with(route("GET", "/b/{user}/{order}", "b"), by_name),
        with(route("GET", "/c/{id}", "c"), scalar),
    ]);
    for path in ["/a/{user}/{order}", "/b/{user}/{order}"] {
        let params = &doc["paths"][path]["get"]["parameters"];
        assert_eq!(params[0]["name"], "user", "{path}");
        assert_eq!(params[0]["schema"]["type"], "string", "{path}");
        assert_eq!(params[1]["name"], "order", "{path}");
        assert_eq!(params[1]["schema"]["type"], "integer", "{path}");
        assert_eq!(params[1]["schema"]["format"], "uint64", "{path}");
    }
    let id = &doc["paths"]["/c/{id}"]["get"]["parameters"][0];
    assert_eq!(id["schema"]["format"], "uint32");
    assert_eq!(id["schema"]["maximum"], u32::MAX);
    let order = &doc["paths"]["/a/{user}/{order}"]["get"]["parameters"][1];
    assert_eq!(order["schema"]["maximum"], u64::MAX);
    assert_eq!(id["required"], true);
}

fn form(op: &mut Operation<'_>) {
    Probe::<Form<Order>>::new().describe_arg(op);
    Probe::<StatusCode>::new().describe_output(op, "200");
}

fn text(op: &mut Operation<'_>) {
    Probe::<String>::new().describe_arg(op);
    Probe::<&'static str>::new().describe_output(op, "200");
}

fn bytes(op: &mut Operation<'_>) {
    Probe::<Bytes>::new().describe_arg(op);
    Probe::<Json<Accepted>>::new().describe_output(op, "2XX");
}

fn unknown(op: &mut Operation<'_>) {
    Probe::<crate::http::CorrelationId>::new().describe_arg(op);
    Probe::<axum::response::Redirect>::new().describe_output(op, "200");
}

#[test]
fn each_body_and_response_kind_has_its_media_type() {
    let doc = doc_of(&[
        with(route("POST", "/form", "form"), form),
        with(route("PUT", "/text", "text"), text),
        with(route("POST", "/bytes", "bytes"), bytes),
        with(route("GET", "/unknown", "unknown"), unknown),
    ]);
    let body =
        |path: &str, method: &str| doc["paths"][path][method]["requestBody"]["content"].clone();
    assert!(
        body("/form", "post")["application/x-www-form-urlencoded"]["schema"]["$ref"].is_string()
    );
    assert_eq!(
        body("/text", "put")["text/plain"]["schema"]["type"],
        "string"
    );
    assert!(body("/bytes", "post")["application/octet-stream"].is_object());
    let responses = |path: &str, method: &str| doc["paths"][path][method]["responses"].clone();
    // A StatusCode return chooses its status at run time, without a body.
    assert!(responses("/form", "post")["2XX"].get("content").is_none());
    assert!(responses("/form", "post").get("200").is_none());
    assert_eq!(
        responses("/text", "put")["200"]["content"]["text/plain; charset=utf-8"]["schema"]["type"],
        "string"
    );
    // `(StatusCode, Json<T>)`: the macro passes "2XX".
    assert!(responses("/bytes", "post")["2XX"]["content"]["application/json"].is_object());
    // Types patron does not know describe nothing, and fail nothing.
    let unknown = &doc["paths"]["/unknown"]["get"];
    assert!(unknown.get("requestBody").is_none() && unknown.get("parameters").is_none());
    assert!(unknown["responses"]["2XX"].get("content").is_none());
    // Reading a body adds the body problems even on a method that rarely has one.
    assert!(responses("/unknown", "get").get("415").is_none());
    assert!(responses("/text", "put")["415"].is_object());
}

fn open(op: &mut Operation<'_>) {
    Probe::<Json<Account>>::new().describe_arg(op);
    Probe::<Json<Account>>::new().describe_output(op, "200");
}

fn report(op: &mut Operation<'_>) {
    Probe::<Json<Problem>>::new().describe_arg(op);
}

#[test]
fn a_name_used_differently_by_requests_and_responses_is_kept_apart() {
    let doc = doc_of(&[
        with(route("POST", "/accounts", "open"), open),
        with(route("POST", "/reports", "report"), report),
    ]);
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["Account"]["properties"]["password"].is_object());
    assert!(
        schemas["AccountResponse"]["properties"]
            .get("password")
            .is_none()
    );
    let op = &doc["paths"]["/accounts"]["post"];
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Account"
    );
    assert_eq!(
        op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/AccountResponse"
    );
    // patron's own problem schema keeps its name; the user's moves aside.
    assert_eq!(
        schemas["Problem"]["description"],
        "RFC 9457 problem details"
    );
    assert!(schemas["Problem2"]["properties"]["code"].is_object());
    assert_eq!(
        doc["paths"]["/reports"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Problem2"
    );
}

#[test]
fn doc_keys_apply_and_left_out_routes_are_absent() {
    let mut tagged = with(route("POST", "/orders", "place"), place);
    if let Some(doc) = &mut tagged.doc {
        doc.summary = Some("Place an order");
        doc.description = Some("Takes the order and answers its id.");
        doc.tags = &["orders", "public"];
        doc.deprecated = true;
    }
    let mut hidden = route("GET", "/internal", "internal");
    hidden.doc = None;
    let doc = doc_of(&[tagged, hidden]);
    let op = &doc["paths"]["/orders"]["post"];
    assert_eq!(op["summary"], "Place an order");
    assert_eq!(op["description"], "Takes the order and answers its id.");
    assert_eq!(op["tags"], json!(["orders", "public"]));
    assert_eq!(op["deprecated"], true);
    assert!(doc["paths"].get("/internal").is_none());
    let plain = doc_of(&[route("GET", "/", "index")]);
    assert!(plain["paths"]["/"]["get"].get("deprecated").is_none());
}
