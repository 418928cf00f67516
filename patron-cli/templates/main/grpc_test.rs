
    #[tokio::test]
    async fn the_grpc_service_greets_and_refuses_an_empty_name() {
        use proto::greeter_server::Greeter as _;
        let ask = |name: &str| {
            tonic::Request::new(proto::HelloRequest {
                name: name.to_string(),
            })
        };
        let reply = Greetings.say_hello(ask("ada")).await.unwrap();
        assert_eq!(reply.into_inner().message, "hello, ada");
        let refused = Greetings.say_hello(ask(" ")).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    }
