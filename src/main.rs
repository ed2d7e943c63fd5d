//! The `jobloop` binary: parse, validate, dispatch, and turn the result into
//! an exit code (0 clean stop, 78 bad settings, 1 any other fatal error).

use std::process::ExitCode;

use clap::Parser;
use jobloop::cli::{Cli, CliCommand};
use jobloop::config::Settings;

/// EX_CONFIG from sysexits.h.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Run(args) => {
            match Settings::from_args(&args, |name| std::env::var(name).ok()) {
                Ok(settings) => match jobloop::run(settings) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("jobloop: {error:#}");
                        ExitCode::FAILURE
                    }
                },
                Err(errors) => {
                    for error in &errors.0 {
                        eprintln!("jobloop: {error}");
                    }
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        CliCommand::Check(args) => {
            match Settings::from_args(&args, |name| std::env::var(name).ok()) {
                Ok(settings) => {
                    for (name, value) in settings.describe() {
                        println!("{name}={value}");
                    }
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    for error in &errors.0 {
                        eprintln!("jobloop: {error}");
                    }
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        CliCommand::Status(args) => jobloop::status::run(&args),
    }
}
