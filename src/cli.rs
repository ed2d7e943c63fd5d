//! The command line as given: clap definitions for `run`, `check` and
//! `status`.
//!
//! The options of `run` and `check` are not typed out here: they are built
//! from the rows of [`crate::config::table::SETTINGS`], each flag paired with its
//! `AGENT_*` variable, its default and its help, so the command line cannot
//! drift from the settings `config` parses and `check` prints. Values stay
//! raw strings so that a bad value becomes jobloop's own one-line error
//! with exit 78 (see `config`), not clap's usage screen. clap resolves
//! precedence: a flag beats the variable, the variable beats the default.

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};

use crate::config::table::{Form, Setting, SETTINGS};
use crate::config::RawSettings;

/// jobloop runs a worker command over and over, one job per run, and makes
/// every run visible: Prometheus metrics, health probes, one OpenTelemetry
/// span and one log file per run.
#[derive(Debug, Parser)]
#[command(name = "jobloop", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The three things jobloop can be asked to do.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the daemon: preflight, then the job over and over.
    Run(RunArgs),
    /// Validate the settings, print the effective ones, exit 0 or 78.
    Check(RunArgs),
    /// Print a short human-readable status of a running daemon or its state file.
    Status(StatusArgs),
}

/// Options of `jobloop status`.
///
/// AGENT_STATE_DIR is deliberately not clap's `env` of `--state-dir`: in
/// the worker's own container it is always set, and clap would then count
/// it as given and refuse `--url` beside it. `status::run` reads it only
/// when neither flag is given (issue #12 item 7).
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Base URL of a running daemon's HTTP server.
    #[arg(long, value_name = "URL", conflicts_with = "state_dir")]
    pub url: Option<String>,
    /// Read state.json from this directory instead of asking the daemon
    /// [default: $AGENT_STATE_DIR when set and --url is not given].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<String>,
    /// Print the state JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Every setting of the daemon, as flag and variable, raw.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// One raw value per settings row, and the job's command.
    pub raw: RawSettings,
}

/// clap id of the job's command (the words after `--`).
const COMMAND_ID: &str = "command";

/// The clap argument of one settings row.
fn arg_of(row: &'static Setting) -> Arg {
    let long = row.flag.trim_start_matches('-');
    let mut arg = Arg::new(long)
        .long(long)
        .env(row.variable)
        .value_name(row.value_name)
        .help(sentence(row.help))
        .action(ArgAction::Set);
    if let Some(default) = row.default {
        arg = arg.default_value(default);
    }
    match row.form {
        // A bare `--auth-kill` means true.
        Form::Bool => arg = arg.num_args(0..=1).default_missing_value("true"),
        // Secrets and commands (whose arguments may carry credentials) are
        // not echoed by `--help` from the environment.
        Form::Secret | Form::Command => arg = arg.hide_env_values(true),
        _ => {}
    }
    arg
}

/// A help line as `--help` shows it: starting with a capital, unless it
/// starts with a name (`state.json`).
fn sentence(help: &str) -> String {
    let first_word = help.split_whitespace().next().unwrap_or_default();
    let mut chars = help.chars();
    match chars.next() {
        Some(first) if first.is_ascii_lowercase() && !first_word.contains('.') => {
            first.to_ascii_uppercase().to_string() + chars.as_str()
        }
        _ => help.to_string(),
    }
}

impl Args for RunArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        SETTINGS
            .iter()
            .fold(command, |command, row| command.arg(arg_of(row)))
            .arg(
                Arg::new(COMMAND_ID)
                    .last(true)
                    .num_args(1..)
                    .action(ArgAction::Append)
                    .value_name("COMMAND")
                    .help("The job: a program and its arguments, after `--`"),
            )
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        RunArgs::augment_args(command)
    }
}

impl FromArgMatches for RunArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<RunArgs, clap::Error> {
        let mut raw = RawSettings::default();
        for row in SETTINGS {
            let id = row.flag.trim_start_matches('-');
            if let Some(value) = matches.get_one::<String>(id) {
                raw.set(row.variable, value.clone());
            }
        }
        raw.command = matches
            .get_many::<String>(COMMAND_ID)
            .map(|words| words.cloned().collect())
            .unwrap_or_default();
        Ok(RunArgs { raw })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = RunArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn run_args(argv: &[&str]) -> RunArgs {
        let mut all = vec!["jobloop", "run"];
        all.extend_from_slice(argv);
        match Cli::try_parse_from(all)
            .expect("clap accepts the flags")
            .command
        {
            CliCommand::Run(args) => args,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn every_row_is_a_flag_with_its_variable_and_default() {
        let command = Cli::command_for_tests();
        let run = command.find_subcommand("run").expect("run");
        for row in SETTINGS {
            let id = row.flag.trim_start_matches('-');
            let arg = run
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .expect(row.variable);
            assert_eq!(arg.get_long(), Some(id));
            assert_eq!(arg.get_env().and_then(|v| v.to_str()), Some(row.variable));
            let defaults: Vec<_> = arg.get_default_values().iter().collect();
            assert_eq!(defaults.len(), usize::from(row.default.is_some()), "{id}");
        }
    }

    #[test]
    fn flags_reach_the_settings_and_the_command_follows_the_double_dash() {
        let args = run_args(&[
            "--idle-sleep",
            "3s",
            "--max-failures=4",
            "--auth-kill",
            "--",
            "/bin/job",
            "--not-a-flag",
        ]);
        assert_eq!(args.raw.get("AGENT_IDLE_SLEEP"), Some("3s"));
        assert_eq!(args.raw.get("AGENT_AUTH_KILL"), Some("true"));
        assert_eq!(args.raw.get("AGENT_BACKOFF_START"), Some("5s"));
        assert_eq!(args.raw.get("AGENT_PREFLIGHT_CMD"), None);
        assert_eq!(args.raw.command, ["/bin/job", "--not-a-flag"]);
        let settings = Settings::from_raw(&args.raw, |_| None).expect("valid");
        assert_eq!(settings.max_failures, 4);
        assert!(settings.auth_kill);
    }

    #[test]
    fn the_defaults_through_clap_are_the_table_defaults() {
        let args = run_args(&["--", "true"]);
        let mut expected = RawSettings::defaults();
        expected.command = vec!["true".into()];
        assert_eq!(args.raw, expected);
    }

    #[test]
    fn status_takes_url_without_a_state_dir_conflict() {
        let cli = Cli::try_parse_from(["jobloop", "status", "--url", "http://127.0.0.1:1"])
            .expect("status --url parses");
        assert!(matches!(
            cli.command,
            CliCommand::Status(StatusArgs { url: Some(_), .. })
        ));
        // Both flags at once are still a usage error.
        let both = [
            "jobloop",
            "status",
            "--url",
            "http://h",
            "--state-dir",
            "/x",
        ];
        assert!(Cli::try_parse_from(both).is_err());
    }

    #[test]
    fn help_lines_start_with_a_capital_unless_they_start_with_a_name() {
        assert_eq!(sentence("first backoff"), "First backoff");
        assert_eq!(sentence("state.json and markers"), "state.json and markers");
        assert_eq!(sentence("SIGTERM → SIGKILL"), "SIGTERM → SIGKILL");
    }

    impl Cli {
        fn command_for_tests() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
