
    #[tokio::test]
    async fn a_job_is_handled() {
        assert!(on_job(Message::new(Json(Job { id: 7 }))).await.is_ok());
    }
