use std::rc::Rc;

#[patron::route(GET "/index")]
async fn index() -> String {
    let shared = Rc::new(String::from("not thread safe"));
    tokio::task::yield_now().await;
    shared.to_string()
}

fn main() {}
