//! The `shoal` binary: parse, run, and report a failure as one line with exit code 1.
#![forbid(unsafe_code)]

use clap::Parser;
use shoal_cli::{Cli, ParseOutcome, error_line, parse_outcome};
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = shoal_cli::docker_argv(&std::env::args().collect::<Vec<_>>());
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(err) => {
            return match parse_outcome(&err, &argv) {
                ParseOutcome::Print(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                ParseOutcome::Fail(line) => fail(&line),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let mut stdout = std::io::stdout();
    match runtime.block_on(shoal_cli::run(cli, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&error_line(&err)),
    }
}

fn fail(line: &str) -> ExitCode {
    eprintln!("Error: {line}");
    ExitCode::FAILURE
}
