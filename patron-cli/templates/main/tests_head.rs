#[cfg(test)]
mod tests {
    use super::*;
    use patron::test::TestServer;

    #[tokio::test]
    async fn greets_and_reports_alive() -> patron::Result<()> {
{{test_service}}        let server = TestServer::start(provide(service)?).await?;
        let hello = server.get("/hello/ada").await?;
        assert_eq!(hello.status(), StatusCode::OK);
        assert_eq!(hello.text(), "hello, ada");
        assert_eq!(server.get("{{alive}}").await?.status(), StatusCode::OK);
        server.shutdown().await // graceful, as on SIGTERM
    }
