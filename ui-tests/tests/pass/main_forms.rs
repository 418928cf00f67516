//! Both `#[patron::main]` forms compile. The entry points are only
//! referenced, not run: a service would serve forever.

use patron::prelude::*;

mod bare {
    #[patron::main]
    pub async fn start() {}
}

mod fallible {
    #[patron::main]
    pub async fn start() -> patron::Result<()> {
        Ok(())
    }
}

mod configured {
    use patron::prelude::*;

    #[patron::main]
    pub async fn start(service: Service) -> patron::Result<Service> {
        Ok(service.name("configured").version("1.0.0").provide(ApiKey::new(["k"])))
    }
}

#[patron::route(GET "/index")]
async fn index() -> &'static str {
    "hello"
}

fn main() {
    let entry_points: [fn() -> std::process::ExitCode; 3] = [bare::start, fallible::start, configured::start];
    assert_eq!(entry_points.len(), 3);
    let _ = Service::new("x");
}
