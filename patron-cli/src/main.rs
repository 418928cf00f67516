//! `patron`, the command-line tool of the patron framework.
//!
//! `patron openapi --url URL` and `patron asyncapi --url URL` print a running
//! service's contract documents.
//!
//! `patron new NAME` writes a service crate that builds and passes its tests
//! at once: `Cargo.toml`, `src/main.rs` with a route (and, per `--with`, a
//! consumer or a client), a test on the test server, a README with the run
//! and test commands, `.gitignore`, a `Dockerfile` and Kubernetes manifests
//! whose probe paths, port and shutdown timing agree with patron's defaults.

#![warn(missing_docs)]

mod contract;
mod new;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The patron microservice framework's command-line tool.
#[derive(Debug, Parser)]
#[command(name = "patron", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new service crate: code, test, README, Dockerfile and
    /// Kubernetes manifests.
    New(new::Request),
    /// Print a running service's OpenAPI document (`/openapi.json`),
    /// indented, for committing and diffing.
    Openapi(contract::Source),
    /// Print a running service's AsyncAPI document (`/asyncapi.json`),
    /// indented, for committing and diffing.
    Asyncapi(contract::Source),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::New(request) => request
            .run()
            .map(|r| r.to_string())
            .map_err(|e| e.to_string()),
        Command::Openapi(source) => {
            contract::fetch(contract::Document::OpenApi, &source).map_err(|e| e.to_string())
        }
        Command::Asyncapi(source) => {
            contract::fetch(contract::Document::AsyncApi, &source).map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
