use patron::prelude::*;

struct Settings {
    verbose: bool,
}

#[patron::route(GET "/index")]
async fn index(Path(id): Path<u32>, settings: Settings) -> String {
    format!("{id} {}", settings.verbose)
}

fn main() {}
