
    #[tokio::test]
    async fn an_event_is_handled() {
        assert!(on_event(Message::new(Json(Event { id: 7 }))).await.is_ok());
    }
