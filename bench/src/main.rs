//! The `shardcore-bench` binary: parses the command line and runs a load or `compare`.

use std::process::ExitCode;

use clap::{error::ErrorKind, CommandFactory, Parser};
use shardcore_bench::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Compare(args)) => compare(&args.files),
        None => {
            if let Err(error) = cli.run.validate() {
                Cli::command()
                    .error(ErrorKind::ArgumentConflict, error)
                    .exit();
            }
            ExitCode::from(shardcore_bench::bench::run(&cli.run))
        }
    }
}

fn compare(files: &[std::path::PathBuf]) -> ExitCode {
    let mut runs = Vec::new();
    for path in files {
        match shardcore_bench::compare::load(path) {
            Ok(summary) => runs.push((path.display().to_string(), summary)),
            Err(e) => {
                eprintln!("shardcore-bench compare: {e}");
                return ExitCode::from(2);
            }
        }
    }
    print!("{}", shardcore_bench::compare::table(&runs));
    ExitCode::SUCCESS
}
