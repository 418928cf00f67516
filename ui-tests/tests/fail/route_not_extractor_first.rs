use patron::prelude::*;

struct Settings {
    verbose: bool,
}

#[patron::route(GET "/index/{id}")]
async fn index(settings: Settings, Path(id): Path<u32>) -> String {
    format!("{id} {}", settings.verbose)
}

fn main() {}
