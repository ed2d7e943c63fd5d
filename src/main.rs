//! The `jobloop` binary: parse, validate, dispatch, and turn the result into
//! an exit code (0 clean stop, 78 bad settings, 1 any other fatal error,
//! 69 or 77 for a halt under AGENT_HALT_ACTION=exit).

use std::process::ExitCode;

use clap::Parser;
use jobloop::cli::{Cli, CliCommand, RunArgs};
use jobloop::config::Settings;

/// EX_CONFIG from sysexits.h.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Run(args) => match settings(&args) {
            Ok(settings) => match jobloop::run(settings) {
                Ok(code) => ExitCode::from(code),
                Err(error) => {
                    eprintln!("jobloop: {error:#}");
                    ExitCode::FAILURE
                }
            },
            Err(code) => code,
        },
        CliCommand::Check(args) => match settings(&args) {
            Ok(settings) => {
                for (name, value) in settings.describe() {
                    println!("{name}={value}");
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        CliCommand::Status(args) => jobloop::status::run(&args),
    }
}

/// Validates the settings of `run` and `check` alike (so every value
/// `check` accepts is one `run` runs with); on bad ones prints one line
/// each and gives exit code 78.
fn settings(args: &RunArgs) -> Result<Settings, ExitCode> {
    Settings::from_raw(&args.raw, |name| std::env::var(name).ok()).map_err(|errors| {
        for error in &errors.0 {
            eprintln!("jobloop: {error}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}
