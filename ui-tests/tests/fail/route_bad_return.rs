struct Report {
    total: u32,
}

#[patron::route(GET "/report")]
async fn report() -> Report {
    Report { total: 1 }
}

fn main() {}
