//! The `shardcore-bench` binary: parses and checks its command line; the load generator itself
//! arrives with the server (see the crate docs of `shardcore_bench`).

use std::process::ExitCode;

use clap::{error::ErrorKind, CommandFactory, Parser};
use shardcore_bench::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = args.validate() {
        Args::command()
            .error(ErrorKind::ArgumentConflict, error)
            .exit();
    }
    println!("shardcore-bench: {}", args.summary());
    // Exit non-zero: no load was generated, and nothing downstream may mistake this for a run.
    eprintln!(
        "shardcore-bench: the load generator arrives with the server (the `shardcore` node does \
         not serve clients yet); nothing was sent"
    );
    ExitCode::FAILURE
}
