//! What the macros' generated code names. Not a public API: anything here
//! may change in any release.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

pub use axum::extract::{FromRequest, FromRequestParts};
pub use axum::middleware::from_fn;
pub use axum::response::{IntoResponse, Response};
pub use axum::routing::MethodFilter;
pub use inventory;

pub use crate::deps::AppState;
pub use crate::error::{Error, Result};
pub use crate::http::{Ext, RouteCtx};
pub use crate::registry::{AuthSpec, DepSpec, RouteDef};
pub use crate::service::Service;

use crate::config::Config;

/// A route's method router.
pub type MethodRouter = axum::routing::MethodRouter<AppState>;

/// `axum::routing::on`, named for generated code.
pub fn method_router<H, T>(filter: MethodFilter, handler: H) -> MethodRouter
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    axum::routing::on(filter, handler)
}

/// The crate a `#[patron::main]` is in.
pub struct MainInfo {
    /// The binary's name.
    pub name: &'static str,
    /// `CARGO_PKG_VERSION`.
    pub version: &'static str,
}

/// What `async fn main()` may return: `()` or `Result<(), E>`.
#[diagnostic::on_unimplemented(
    message = "`#[patron::main] async fn main()` must return `()` or `patron::Result<()>`, not `{Self}`",
    note = "to configure the service, take it as an argument: `async fn main(service: Service) -> patron::Result<Service>`"
)]
pub trait MainOutput {
    /// The outcome as a `Result`.
    fn into_result(self) -> Result<()>;
}

impl MainOutput for () {
    fn into_result(self) -> Result<()> {
        Ok(())
    }
}

impl<E: Into<Error>> MainOutput for std::result::Result<(), E> {
    fn into_result(self) -> Result<()> {
        self.map_err(Into::into)
    }
}

/// Entry point of `#[patron::main] async fn main()`.
pub fn run_main<F, Fut>(info: MainInfo, body: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future,
    Fut::Output: MainOutput,
{
    run_main_with_service(info, move |service| async move {
        body().await.into_result()?;
        Ok(service)
    })
}

/// Entry point of `#[patron::main] async fn main(service: Service) -> patron::Result<Service>`.
pub fn run_main_with_service<F, Fut>(info: MainInfo, body: F) -> ExitCode
where
    F: FnOnce(Service) -> Fut,
    Fut: Future<Output = Result<Service>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let config = match Config::from_env() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {}: {e}", info.name);
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = crate::observe::log::init(&config, info.name, info.version) {
            eprintln!("error: {}: {e}", info.name);
            return ExitCode::FAILURE;
        }
        let service = Service::new(info.name).version(info.version).config(config);
        let service = match body(service).await {
            Ok(s) => s,
            Err(e) => return fail(info.name, "start-up failed", &e),
        };
        match service.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(info.name, "the service failed", &e),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

fn fail(name: &str, what: &str, err: &Error) -> ExitCode {
    tracing::error!(error = %err, "{what}");
    eprintln!("error: {name}: {err}");
    ExitCode::FAILURE
}
