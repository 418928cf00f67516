
/// Provides what the routes and consumers take as `Dep<T>`. `main` and the
/// tests share it, so the tests run the service `main` runs.
fn provide(service: Service) -> patron::Result<Service> {
{{provide}}    Ok(service)
}

/// Routes and consumers register themselves. The version the service
/// reports (`/info`, log lines) is the one given at build time in
/// `{{version_var}}`, else the crate's.
#[patron::main]
async fn main(service: Service) -> patron::Result<Service> {
    provide(service)
}
