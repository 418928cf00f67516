use patron::client::sql::Db;

/// The database's clock: each query is a span and a metric sample.
#[patron::route(GET "/db/now")]
async fn db_now(db: Dep<Db>) -> Result<String, patron::Error> {
    let (now,): (String,) = sqlx::query_as("SELECT now()::text")
        .fetch_one(&*db)
        .await
        .map_err(|e| patron::Error::unavailable(format!("cannot ask the database: {e}")))?;
    Ok(now)
}
