//! The command line as given: clap definitions for `run`, `check` and
//! `status`, every option paired with its `AGENT_*` variable.
//!
//! Values stay raw strings here so that a bad value becomes jobloop's own
//! one-line error with exit 78 (see `config`), not clap's usage screen.
//! clap resolves precedence: a flag beats the variable, the variable beats
//! the default.

use clap::{Args, Parser, Subcommand};

/// jobloop runs a worker command over and over, one job per run, and makes
/// every run visible: Prometheus metrics, health probes, one OpenTelemetry
/// span and one log file per run.
#[derive(Debug, Parser)]
#[command(name = "jobloop", version, about, max_term_width = 100)]
pub struct Cli {
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
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Base URL of a running daemon's HTTP server.
    #[arg(long, value_name = "URL", conflicts_with = "state_dir")]
    pub url: Option<String>,
    /// Read state.json from this directory instead of asking the daemon.
    #[arg(long, env = "AGENT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<String>,
    /// Print the state JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Every setting of the daemon, as flag and variable, raw.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Consecutive failures that make the daemon unhealthy; 0 = never.
    #[arg(
        long,
        env = "AGENT_MAX_FAILURES",
        default_value = "5",
        value_name = "N"
    )]
    pub max_failures: String,
    /// First backoff after a failure.
    #[arg(
        long,
        env = "AGENT_BACKOFF_START",
        default_value = "5s",
        value_name = "DURATION"
    )]
    pub backoff_start: String,
    /// Multiplier per failure (a number >= 1, fractions allowed).
    #[arg(
        long,
        env = "AGENT_BACKOFF_FACTOR",
        default_value = "2",
        value_name = "FACTOR"
    )]
    pub backoff_factor: String,
    /// Backoff cap.
    #[arg(
        long,
        env = "AGENT_BACKOFF_MAX",
        default_value = "300s",
        value_name = "DURATION"
    )]
    pub backoff_max: String,
    /// Fraction 0..1 of each backoff that is randomised (0 = exact sequence).
    #[arg(
        long,
        env = "AGENT_BACKOFF_JITTER",
        default_value = "0",
        value_name = "FRACTION"
    )]
    pub backoff_jitter: String,
    /// Sleep after a run that exited 0.
    #[arg(
        long,
        env = "AGENT_IDLE_SLEEP",
        default_value = "2s",
        value_name = "DURATION"
    )]
    pub idle_sleep: String,
    /// Exit code that means the credentials expired.
    #[arg(
        long,
        env = "AGENT_AUTH_EXIT_CODE",
        default_value = "3",
        value_name = "CODE"
    )]
    pub auth_exit_code: String,
    /// Regex; a match in any line of the run's output means the credentials expired.
    #[arg(
        long,
        env = "AGENT_AUTH_PATTERN",
        default_value = crate::config::DEFAULT_AUTH_PATTERN,
        value_name = "REGEX"
    )]
    pub auth_pattern: String,
    /// Stop the job as soon as the pattern matches, instead of after it exits.
    #[arg(long, env = "AGENT_AUTH_KILL", default_value = "false", value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub auth_kill: String,
    /// A run longer than this is stopped and counts as a failure; 0 = none.
    #[arg(
        long,
        env = "AGENT_JOB_TIMEOUT",
        default_value = "0",
        value_name = "DURATION"
    )]
    pub job_timeout: String,
    /// Between SIGTERM and SIGKILL when jobloop stops a job (timeout, auth kill).
    #[arg(
        long,
        env = "AGENT_KILL_GRACE",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub kill_grace: String,
    /// On jobloop's own shutdown: between SIGTERM to the job and SIGKILL.
    #[arg(
        long,
        env = "AGENT_SHUTDOWN_GRACE",
        default_value = "25s",
        value_name = "DURATION"
    )]
    pub shutdown_grace: String,
    /// Shell command run once before the loop; non-zero = preflight failed.
    #[arg(
        long = "preflight",
        env = "AGENT_PREFLIGHT_CMD",
        value_name = "COMMAND"
    )]
    pub preflight_cmd: Option<String>,
    /// Longest the preflight may run.
    #[arg(
        long,
        env = "AGENT_PREFLIGHT_TIMEOUT",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub preflight_timeout: String,
    /// While halted, re-run the preflight this often and resume when it passes; 0 = off.
    #[arg(
        long,
        env = "AGENT_RECOVER_INTERVAL",
        default_value = "0",
        value_name = "DURATION"
    )]
    pub recover_interval: String,
    /// Run logs go to `runs/` below it.
    #[arg(
        long,
        env = "AGENT_LOG_DIR",
        default_value = "./jobloop-data/logs",
        value_name = "DIR"
    )]
    pub log_dir: String,
    /// state.json and the marker files.
    #[arg(
        long,
        env = "AGENT_STATE_DIR",
        default_value = "./jobloop-data/state",
        value_name = "DIR"
    )]
    pub state_dir: String,
    /// Run logs kept, newest first; 0 = no count limit.
    #[arg(long, env = "AGENT_LOG_KEEP", default_value = "1000", value_name = "N")]
    pub log_keep: String,
    /// Older run logs are deleted; 0 = no age limit.
    #[arg(
        long,
        env = "AGENT_LOG_MAX_AGE",
        default_value = "14d",
        value_name = "DURATION"
    )]
    pub log_max_age: String,
    /// Total size of `runs/`, oldest deleted first; 0 = no limit.
    #[arg(
        long,
        env = "AGENT_LOG_MAX_BYTES",
        default_value = "1GiB",
        value_name = "SIZE"
    )]
    pub log_max_bytes: String,
    /// Per run: output past it is read, scanned and counted but not written; 0 = no limit.
    #[arg(
        long,
        env = "AGENT_RUN_LOG_MAX_BYTES",
        default_value = "100MiB",
        value_name = "SIZE"
    )]
    pub run_log_max_bytes: String,
    /// Shell command run at start and after each iteration (the seed's rotate-logs.sh).
    #[arg(long, env = "AGENT_ROTATE_CMD", value_name = "COMMAND")]
    pub rotate_cmd: Option<String>,
    /// Shell command run after the rotate command (the seed's log-cleanup.sh).
    #[arg(long, env = "AGENT_CLEANUP_CMD", value_name = "COMMAND")]
    pub cleanup_cmd: Option<String>,
    /// Longest a rotate or cleanup command may run.
    #[arg(
        long,
        env = "AGENT_HOOK_TIMEOUT",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub hook_timeout: String,
    /// Address of the HTTP server (metrics, health, probes).
    #[arg(
        long,
        env = "AGENT_LISTEN",
        default_value = "0.0.0.0:9464",
        value_name = "ADDR"
    )]
    pub listen: String,
    /// Bearer token that `POST /resume` requires; without it /resume answers 403.
    #[arg(
        long,
        env = "AGENT_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
    /// File holding the admin token (a mounted Secret); used when no token is given.
    #[arg(long, env = "AGENT_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<String>,
    /// Daemon's own log on stderr: `text` or `json`.
    #[arg(
        long,
        env = "AGENT_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: String,
    /// Tracing filter for the daemon's own log (`info`, `jobloop=debug`, ...).
    #[arg(
        long,
        env = "AGENT_LOG_LEVEL",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log_level: String,
    /// The job: a program and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}
