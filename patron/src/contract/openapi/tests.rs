//! The document of routes with each kind of path, auth and rate limit.

use std::any::TypeId;
use std::time::Duration;

use serde_json::Value;

use super::document;
use crate::describe::Operation;
use crate::http::registry::{AuthSpec, RateSpec, RouteDef, RouteDoc};

mod schemas;

fn undescribed(_: &mut Operation<'_>) {}

fn unused(_: &crate::http::RouteCtx) -> axum::routing::MethodRouter<crate::deps::AppState> {
    axum::routing::MethodRouter::new()
}

const fn route(method: &'static str, path: &'static str, handler: &'static str) -> RouteDef {
    RouteDef {
        method,
        path,
        span_name: "",
        handler,
        module: "svc::api",
        file: "src/api.rs",
        line: 1,
        auth: None,
        middleware: &[],
        trace: true,
        timeout: None,
        body_limit: None,
        rate_limit: None,
        cache: None,
        deps: &[],
        build: unused,
        doc: Some(RouteDoc {
            summary: None,
            description: None,
            tags: &[],
            deprecated: false,
            describe: undescribed,
        }),
    }
}

struct Custom;

fn routes() -> Vec<RouteDef> {
    let mut orders = route("POST", "/orders", "place");
    orders.auth = Some(AuthSpec {
        type_name: "ApiKey",
        type_id: TypeId::of::<Custom>,
    });
    orders.rate_limit = Some(RateSpec {
        count: 10,
        per: Duration::from_secs(1),
    });
    let mut admin = route("DELETE", "/admin/users/{id}", "remove");
    admin.auth = Some(AuthSpec {
        type_name: "crate::auth::Bearer",
        type_id: TypeId::of::<Custom>,
    });
    vec![
        route("GET", "/users/{id}/orders/{order}", "user_order"),
        route("GET", "/files/{*path}", "file"),
        route("GET", "/orders", "list"),
        orders,
        admin,
    ]
}

fn doc() -> Value {
    let routes = routes();
    let refs: Vec<&RouteDef> = routes.iter().collect();
    document("orders", "1.2.3", &refs)
}

fn statuses(op: &Value) -> Vec<&str> {
    let mut s: Vec<&str> = op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    s.sort();
    s
}

#[test]
fn the_header_names_the_service_and_its_version() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "orders");
    assert_eq!(doc["info"]["version"], "1.2.3");
}

#[test]
fn path_parameters_are_declared_and_wildcards_renamed() {
    let doc = doc();
    let op = &doc["paths"]["/users/{id}/orders/{order}"]["get"];
    let names: Vec<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["in"], "path");
            assert_eq!(p["required"], true);
            p["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(names, ["id", "order"]);
    assert_eq!(op["operationId"], "svc.api.user_order");
    let file = &doc["paths"]["/files/{path}"]["get"];
    assert_eq!(file["parameters"][0]["name"], "path");
    assert!(doc["paths"]["/orders"]["get"].get("parameters").is_none());
}

#[test]
fn two_methods_on_one_path_are_one_path_item() {
    let doc = doc();
    let item = doc["paths"]["/orders"].as_object().unwrap();
    let mut methods: Vec<&String> = item.keys().collect();
    methods.sort();
    assert_eq!(methods, ["get", "post"]);
}

#[test]
fn problem_responses_follow_what_the_route_can_answer() {
    let doc = doc();
    assert_eq!(
        statuses(&doc["paths"]["/orders"]["get"]),
        ["2XX", "400", "404", "500", "503", "default"]
    );
    assert_eq!(
        statuses(&doc["paths"]["/orders"]["post"]),
        [
            "2XX", "400", "401", "404", "408", "413", "415", "422", "429", "500", "503", "default"
        ]
    );
    let r = &doc["paths"]["/orders"]["post"]["responses"]["429"]["$ref"];
    assert_eq!(r, "#/components/responses/TooManyRequests");
    let too_many = &doc["components"]["responses"]["TooManyRequests"];
    assert_eq!(
        too_many["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    let problem = &doc["components"]["schemas"]["Problem"];
    assert_eq!(
        problem["required"],
        serde_json::json!(["title", "status", "detail"])
    );
}

#[test]
fn each_authenticator_is_a_security_scheme() {
    let doc = doc();
    assert_eq!(
        doc["paths"]["/orders"]["post"]["security"],
        serde_json::json!([{ "ApiKey": [] }])
    );
    assert_eq!(
        doc["paths"]["/admin/users/{id}"]["delete"]["security"],
        serde_json::json!([{ "Bearer": [] }])
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["ApiKey"]["type"], "apiKey");
    assert_eq!(schemes["ApiKey"]["name"], "Authorization");
    assert!(
        schemes["Bearer"]["description"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
    assert!(doc["paths"]["/orders"]["get"].get("security").is_none());
}

#[test]
fn without_authenticated_routes_there_are_no_security_schemes() {
    let plain = [route("GET", "/", "index")];
    let refs: Vec<&RouteDef> = plain.iter().collect();
    let doc = document("svc", "0.1.0", &refs);
    assert!(doc["components"].get("securitySchemes").is_none());
}
