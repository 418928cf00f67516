use std::time::Duration;

use patron::client::http::HttpClient;

#[derive(Deserialize, schemars::JsonSchema)]
struct Fetch {
    url: String,
}

/// Fetches a page: the call carries this request's correlation id and trace
/// context, and is measured.
#[patron::route(GET "/fetch")]
async fn fetch(Query(q): Query<Fetch>, client: Dep<HttpClient>) -> Result<String, patron::Error> {
    let response = client
        .send(client.request(Method::GET, &q.url))
        .await
        .map_err(|e| patron::Error::unavailable(e.to_string()))?;
    Ok(format!("{} answered {}", q.url, response.status()))
}
