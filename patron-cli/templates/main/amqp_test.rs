
    #[tokio::test]
    async fn a_task_is_handled() {
        assert!(on_task(Message::new(Json(Task { id: 7 }))).await.is_ok());
    }
