//! Typed, cross-checked settings built from the raw values.
//!
//! The settings themselves are listed once, in [`table::SETTINGS`]; `cli`
//! builds its flags from that table and hands over [`RawSettings`], the
//! strings exactly as the user gave them (flag, variable or default). This
//! module turns them into [`Settings`] and reports every bad value as one
//! line naming the variable, the flag, the value and what is allowed
//! (SPEC §1). Nothing is started or written before this succeeds, and every
//! value accepted here is one the daemon can run with (no duration so long
//! that adding it to a clock overflows, no timeout of 0).
//!
//! This module is a leaf: it imports only value types of other leaf
//! modules, never `cli`.

pub mod otlp;
mod raw;
pub mod table;
pub mod units;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use regex::bytes::{Regex, RegexBuilder};

use crate::backoff::BackoffPolicy;
use crate::exit_policy::ExitPolicy;
use crate::naming::RetentionPolicy;
pub use otlp::{otlp_from_env, redact_url, OtlpCompression, OtlpProtocol, OtlpSettings};
use raw::Checker;
pub use raw::RawSettings;
pub use table::DEFAULT_AUTH_PATTERN;
use table::SETTINGS;
use units::{format_duration, parse_duration};

/// What a timeout setting accepts, for error messages: 0 would stop the
/// command before it could do anything.
pub const TIMEOUT_FORM: &str = "a duration > 0 and up to 100 years \
                                (a timeout of 0 would stop the command at once)";

/// Format of the daemon's own log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What jobloop does with a running job on SIGTERM/SIGINT (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// The job gets SIGTERM at once, SIGKILL after AGENT_SHUTDOWN_GRACE.
    Terminate,
    /// The job may finish on its own within AGENT_SHUTDOWN_GRACE; then
    /// SIGTERM, and SIGKILL after AGENT_KILL_GRACE.
    Drain,
}

impl StopMode {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StopMode::Terminate => "terminate",
            StopMode::Drain => "drain",
        }
    }
}

/// What a halt does to jobloop itself (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltAction {
    /// Stay up, serving metrics and health, until a resume.
    Wait,
    /// Stop what is left and exit with the halt's code (69 or 77).
    Exit,
}

impl HaltAction {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HaltAction::Wait => "wait",
            HaltAction::Exit => "exit",
        }
    }
}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The job: program and arguments.
    pub command: Vec<String>,
    /// Consecutive failures that halt the loop; 0 = never.
    pub max_failures: u32,
    /// Backoff start, factor, cap and jitter.
    pub backoff: BackoffPolicy,
    /// Sleep after a successful run.
    pub idle_sleep: Duration,
    /// Exit code that means the credentials expired.
    pub auth_exit_code: i32,
    /// Pattern that means the credentials expired, matched line by line.
    pub auth_pattern: Regex,
    /// Stop the job as soon as the pattern matches.
    pub auth_kill: bool,
    /// What exit codes mean, before the 0.1 rules (AGENT_EXIT_POLICY).
    pub exit_policy: ExitPolicy,
    /// Longest a run may take; `None` = no limit.
    pub job_timeout: Option<Duration>,
    /// SIGTERM-to-SIGKILL grace when jobloop stops a job itself.
    pub kill_grace: Duration,
    /// SIGTERM-to-SIGKILL grace on jobloop's own shutdown.
    pub shutdown_grace: Duration,
    /// What a shutdown does to the running job.
    pub stop_mode: StopMode,
    /// What a halt does to jobloop.
    pub halt_action: HaltAction,
    /// Shell command run before the loop.
    pub preflight_cmd: Option<String>,
    /// Longest the preflight may run.
    pub preflight_timeout: Duration,
    /// While halted, re-run the preflight this often; `None` = off.
    pub recover_interval: Option<Duration>,
    /// Run logs go to `runs/` below it.
    pub log_dir: PathBuf,
    /// state.json and markers.
    pub state_dir: PathBuf,
    /// Retention limits of `runs/`.
    pub retention: RetentionPolicy,
    /// Bytes of one run's output written to its log; 0 = no limit.
    pub run_log_max_bytes: u64,
    /// Shell command run after each iteration (rotate).
    pub rotate_cmd: Option<String>,
    /// Shell command run after the rotate command (cleanup).
    pub cleanup_cmd: Option<String>,
    /// Longest a hook may run.
    pub hook_timeout: Duration,
    /// Address of the HTTP server.
    pub listen: SocketAddr,
    /// Bearer token for `POST /resume`.
    pub admin_token: Option<String>,
    /// File the admin token was read from, when it came from one.
    pub admin_token_file: Option<PathBuf>,
    /// Format of the daemon's own log.
    pub log_format: LogFormat,
    /// Filter of the daemon's own log, already checked to parse.
    pub log_level: String,
    /// OTLP export settings.
    pub otlp: OtlpSettings,
}

/// One bad setting: which, what was given, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value '{}' for {variable} ({flag}): {allowed}", .value.escape_debug())]
pub struct ConfigError {
    /// Environment variable of the setting.
    pub variable: &'static str,
    /// Flag of the setting.
    pub flag: &'static str,
    /// The value as given.
    pub value: String,
    /// What would have been accepted.
    pub allowed: String,
}

/// Every bad setting found, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Compiles the auth pattern the way the matcher uses it: per line
/// (`^`/`$` at line ends), and bytewise like `LC_ALL=C grep`, so `.`
/// also crosses invalid UTF-8. Patterns that need Unicode classes
/// (`\p{..}`) fall back to Unicode mode.
///
/// # Errors
///
/// When the pattern is not a valid regex.
pub fn build_auth_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    let build = |unicode: bool| {
        RegexBuilder::new(pattern)
            .multi_line(true)
            .unicode(unicode)
            .size_limit(16 << 20)
            .build()
    };
    build(false).or_else(|_| build(true))
}

/// Parses an on/off value the way shells and YAML users write it.
fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Parses the listen address: `HOST:PORT` with an IP, `localhost:PORT` or `:PORT`.
fn parse_listen(raw: &str) -> Option<SocketAddr> {
    let text = raw.trim();
    if let Ok(address) = text.parse() {
        return Some(address);
    }
    if let Some(port) = text.strip_prefix(':') {
        return Some(SocketAddr::from(([0, 0, 0, 0], port.parse().ok()?)));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        return Some(SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?)));
    }
    None
}

impl Settings {
    /// Validates the raw values (and the `OTEL_*` variables read through
    /// `lookup`) into settings.
    ///
    /// # Errors
    ///
    /// Every bad value, one [`ConfigError`] each.
    pub fn from_raw(
        raw: &RawSettings,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigErrors> {
        let mut check = Checker {
            raw,
            errors: Vec::new(),
        };
        let c = &mut check;

        let max_failures = c.count("AGENT_MAX_FAILURES");
        let start = c.duration("AGENT_BACKOFF_START");
        let max = c.duration("AGENT_BACKOFF_MAX");
        let factor = c.number(
            "AGENT_BACKOFF_FACTOR",
            |value| value.is_finite() && value >= 1.0,
            "a number ≥ 1 (fractions allowed, e.g. 1.5)",
        );
        let jitter = c.number(
            "AGENT_BACKOFF_JITTER",
            |value| (0.0..=1.0).contains(&value),
            "a fraction from 0 to 1",
        );
        if parse_duration(c.text("AGENT_BACKOFF_START")).is_some()
            && parse_duration(c.text("AGENT_BACKOFF_MAX")).is_some()
            && max < start
        {
            c.reject(
                "AGENT_BACKOFF_MAX",
                &format!(
                    "a duration ≥ AGENT_BACKOFF_START ({})",
                    format_duration(start)
                ),
            );
        }
        let idle_sleep = c.duration("AGENT_IDLE_SLEEP");
        let auth_exit_code = match c.text("AGENT_AUTH_EXIT_CODE").trim().parse::<i32>() {
            Ok(code) if (1..=255).contains(&code) => code,
            _ => {
                c.reject(
                    "AGENT_AUTH_EXIT_CODE",
                    "an exit code from 1 to 255 (0 means success)",
                );
                3
            }
        };
        let pattern = c.text("AGENT_AUTH_PATTERN");
        let auth_pattern = match build_auth_pattern(pattern) {
            Ok(regex) if !pattern.is_empty() && !regex.is_match(b"") => Some(regex),
            Ok(_) => {
                c.reject(
                    "AGENT_AUTH_PATTERN",
                    "a regex that does not match an empty line",
                );
                None
            }
            Err(error) => {
                let why = error.to_string();
                let last = why.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
                c.reject(
                    "AGENT_AUTH_PATTERN",
                    &format!(
                        "a valid regex ({})",
                        last.trim().trim_start_matches("error: ")
                    ),
                );
                None
            }
        };
        let auth_kill = parse_bool(c.text("AGENT_AUTH_KILL")).unwrap_or_else(|| {
            c.reject("AGENT_AUTH_KILL", "true or false");
            false
        });
        let exit_policy = ExitPolicy::parse(c.text("AGENT_EXIT_POLICY")).unwrap_or_else(|error| {
            c.reject(
                "AGENT_EXIT_POLICY",
                &format!(
                    "{error} (rules are CODES=ACTION, comma-separated, CODES N or N-M from 0 to 255)"
                ),
            );
            ExitPolicy::default()
        });
        let job_timeout = c.duration_or_off("AGENT_JOB_TIMEOUT");
        let kill_grace = c.duration("AGENT_KILL_GRACE");
        let shutdown_grace = c.duration("AGENT_SHUTDOWN_GRACE");
        let stop_mode = match c.choice("AGENT_STOP_MODE") {
            Some("drain") => StopMode::Drain,
            _ => StopMode::Terminate,
        };
        let halt_action = match c.choice("AGENT_HALT_ACTION") {
            Some("exit") => HaltAction::Exit,
            _ => HaltAction::Wait,
        };
        let preflight_cmd = c.command("AGENT_PREFLIGHT_CMD");
        let preflight_timeout = c.duration("AGENT_PREFLIGHT_TIMEOUT");
        let recover_interval = c.duration_or_off("AGENT_RECOVER_INTERVAL");
        let log_dir = non_empty_path(c, "AGENT_LOG_DIR");
        let state_dir = non_empty_path(c, "AGENT_STATE_DIR");
        let keep = c.count("AGENT_LOG_KEEP");
        let max_age = c.duration_or_off("AGENT_LOG_MAX_AGE");
        let max_bytes = c.size("AGENT_LOG_MAX_BYTES");
        let run_log_max_bytes = c.size("AGENT_RUN_LOG_MAX_BYTES");
        let rotate_cmd = c.command("AGENT_ROTATE_CMD");
        let cleanup_cmd = c.command("AGENT_CLEANUP_CMD");
        let hook_timeout = c.duration("AGENT_HOOK_TIMEOUT");
        let listen = parse_listen(c.text("AGENT_LISTEN")).unwrap_or_else(|| {
            c.reject(
                "AGENT_LISTEN",
                "an address HOST:PORT with an IP (0.0.0.0:9464, 127.0.0.1:9464, [::]:9464) or :PORT",
            );
            SocketAddr::from(([0, 0, 0, 0], 9464))
        });
        let admin_token_file = c.optional("AGENT_ADMIN_TOKEN_FILE").map(PathBuf::from);
        let admin_token = admin_token(c);
        let log_format = match c.choice("AGENT_LOG_FORMAT") {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        };
        let log_level = c.text("AGENT_LOG_LEVEL");
        if tracing_subscriber::EnvFilter::try_new(log_level).is_err() || log_level.trim().is_empty()
        {
            c.reject(
                "AGENT_LOG_LEVEL",
                "a tracing filter such as info, warn or jobloop=debug",
            );
        }
        let command = &raw.command;
        if command.first().is_none_or(String::is_empty) {
            c.fail(
                "COMMAND",
                "after --",
                &command.join(" "),
                "a program to run, e.g. jobloop run -- /opt/agent/bin/run-one-job.sh",
            );
        }
        let otlp = otlp_from_env(lookup, &mut c.errors);

        let (Some(auth_pattern), true) = (auth_pattern, check.errors.is_empty()) else {
            return Err(ConfigErrors(check.errors));
        };
        Ok(Settings {
            command: command.clone(),
            max_failures,
            backoff: BackoffPolicy {
                start,
                factor,
                max,
                jitter,
            },
            idle_sleep,
            auth_exit_code,
            auth_pattern,
            auth_kill,
            exit_policy,
            job_timeout,
            kill_grace,
            shutdown_grace,
            stop_mode,
            halt_action,
            preflight_cmd,
            preflight_timeout,
            recover_interval,
            log_dir,
            state_dir,
            retention: RetentionPolicy {
                keep: keep as usize,
                max_age,
                max_bytes,
            },
            run_log_max_bytes,
            rotate_cmd,
            cleanup_cmd,
            hook_timeout,
            listen,
            admin_token,
            admin_token_file,
            log_format,
            log_level: log_level.to_string(),
            otlp,
        })
    }

    /// The effective settings as `VARIABLE=value` lines for `jobloop
    /// check`: every row of [`table::SETTINGS`] as its row describes it
    /// (secrets hidden, commands shown as their program and number of
    /// arguments), then the OTLP export and the job's command.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let mut lines: Vec<(&'static str, String)> = SETTINGS
            .iter()
            .map(|row| (row.variable, (row.describe)(self)))
            .collect();
        lines.extend(self.otlp.describe());
        // Arguments may carry credentials: the program and their number.
        lines.push((
            "COMMAND",
            format!(
                "{} ({} arguments)",
                self.command.first().map_or("", String::as_str),
                self.command.len().saturating_sub(1)
            ),
        ));
        lines
    }
}

fn non_empty_path(c: &mut Checker, variable: &str) -> PathBuf {
    let raw = c.text(variable);
    if raw.trim().is_empty() {
        c.reject(variable, "a directory path");
    }
    PathBuf::from(raw)
}

fn admin_token(c: &mut Checker) -> Option<String> {
    if let Some(token) = c.optional("AGENT_ADMIN_TOKEN") {
        return Some(token.to_string());
    }
    let path = c.optional("AGENT_ADMIN_TOKEN_FILE")?;
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
        Ok(_) => {
            c.reject(
                "AGENT_ADMIN_TOKEN_FILE",
                "a file holding the token (it is empty)",
            );
            None
        }
        Err(error) => {
            c.reject(
                "AGENT_ADMIN_TOKEN_FILE",
                &format!("a readable file holding the token ({error})"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use table::{setting, Form};

    /// Parses flags the way `cli` hands them over: `--flag value` or
    /// `--flag=value` (looked up in the table), then `--` and the command.
    fn parse(extra: &[&str]) -> Result<Settings, ConfigErrors> {
        let mut raw = RawSettings::defaults();
        let mut args = extra.iter();
        while let Some(arg) = args.next() {
            if *arg == "--" {
                raw.command = args.map(|a| a.to_string()).collect();
                break;
            }
            let (flag, value) = match arg.split_once('=') {
                Some((flag, value)) => (flag, value),
                None => (*arg, *args.next().expect("a value after the flag")),
            };
            let row = SETTINGS.iter().find(|row| row.flag == flag).expect(flag);
            raw.set(row.variable, value);
        }
        Settings::from_raw(&raw, |_| None)
    }

    /// Parses the defaults with one row set to `value`.
    fn with(variable: &str, value: &str) -> Result<Settings, ConfigErrors> {
        let mut raw = RawSettings::defaults();
        raw.set(variable, value).command = vec!["true".into()];
        Settings::from_raw(&raw, |_| None)
    }

    /// Asserts exactly one error, naming `variable`, and returns its line.
    fn one_error(result: Result<Settings, ConfigErrors>, variable: &str) -> String {
        let errors = result.expect_err(variable);
        assert_eq!(errors.0.len(), 1, "{variable}: {errors}");
        assert_eq!(errors.0[0].variable, variable, "{errors}");
        let line = errors.to_string();
        assert!(!line.contains('\n'), "{line}");
        line
    }

    #[test]
    fn every_duration_over_100_years_is_a_bad_setting() {
        let durations = SETTINGS.iter().filter(|row| {
            matches!(
                row.form,
                Form::Duration | Form::DurationOrOff | Form::Timeout
            )
        });
        let mut seen = 0;
        for row in durations {
            seen += 1;
            for value in ["10000000000000000000", "101y", "36525days 1s"] {
                let mut raw = RawSettings::defaults();
                raw.set(row.variable, value).command = vec!["true".into()];
                // The backoff cap must stay ≥ its start.
                if row.variable == "AGENT_BACKOFF_START" {
                    raw.set("AGENT_BACKOFF_MAX", "100y");
                }
                let line = one_error(Settings::from_raw(&raw, |_| None), row.variable);
                assert!(line.contains(row.flag) && line.contains(value), "{line}");
                assert!(line.contains("up to 100 years"), "{line}");
            }
            let mut raw = RawSettings::defaults();
            raw.set(row.variable, "100y").command = vec!["true".into()];
            raw.set("AGENT_BACKOFF_MAX", "100y");
            let settings = Settings::from_raw(&raw, |_| None).expect("100 years is allowed");
            let described = settings.describe();
            let shown = described.iter().find(|(name, _)| *name == row.variable);
            assert_eq!(
                shown.map(|(_, v)| v.as_str()),
                Some("100years"),
                "{}",
                row.variable
            );
        }
        assert!(seen >= 10, "{seen} duration rows");
    }

    #[test]
    fn a_timeout_of_zero_is_a_bad_setting() {
        for variable in ["AGENT_HOOK_TIMEOUT", "AGENT_PREFLIGHT_TIMEOUT"] {
            assert_eq!(setting(variable).form, Form::Timeout);
            for zero in ["0", "0s", "0ms", "0.0"] {
                let line = one_error(with(variable, zero), variable);
                assert!(line.contains("> 0"), "{line}");
            }
        }
        // Elsewhere 0 keeps its meaning: off, or at once.
        for variable in ["AGENT_JOB_TIMEOUT", "AGENT_KILL_GRACE", "AGENT_IDLE_SLEEP"] {
            assert!(with(variable, "0").is_ok(), "{variable}");
        }
    }

    #[test]
    fn check_hides_the_arguments_of_every_command() {
        let mut raw = RawSettings::defaults();
        raw.set("AGENT_PREFLIGHT_CMD", "/opt/check.sh --token pre-s3cret")
            .set("AGENT_ROTATE_CMD", "rotate rot-s3cret")
            .set("AGENT_CLEANUP_CMD", "KEY=clean-s3cret /opt/cleanup.sh")
            .set("AGENT_ADMIN_TOKEN", "admin-s3cret")
            .command = vec!["/opt/job".into(), "--key".into(), "job-s3cret".into()];
        let settings = Settings::from_raw(&raw, |_| None).expect("valid");
        let described = settings.describe();
        let text = format!("{described:?}");
        assert!(!text.contains("s3cret"), "{text}");
        let value = |name: &str| {
            described
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(value("AGENT_PREFLIGHT_CMD"), "/opt/check.sh (2 arguments)");
        assert_eq!(value("AGENT_ROTATE_CMD"), "rotate (1 arguments)");
        assert_eq!(value("AGENT_CLEANUP_CMD"), "(program hidden) (1 arguments)");
        assert_eq!(value("AGENT_ADMIN_TOKEN"), "(set, hidden)");
        assert_eq!(value("COMMAND"), "/opt/job (2 arguments)");
    }

    #[test]
    fn describe_lists_every_row_then_otlp_and_the_command() {
        let settings = parse(&["--", "true"]).expect("defaults are valid");
        let names: Vec<&str> = settings.describe().iter().map(|(n, _)| *n).collect();
        let mut expected: Vec<&str> = SETTINGS.iter().map(|row| row.variable).collect();
        expected.extend(settings.otlp.describe().iter().map(|(n, _)| *n));
        expected.push("COMMAND");
        assert_eq!(names, expected);
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = parse(&["--", "true"]).expect("defaults are valid");
        assert_eq!(s.max_failures, 5);
        assert_eq!(s.backoff.start, Duration::from_secs(5));
        assert_eq!(s.backoff.factor, 2.0);
        assert_eq!(s.backoff.max, Duration::from_secs(300));
        assert_eq!(s.idle_sleep, Duration::from_secs(2));
        assert_eq!(s.auth_exit_code, 3);
        assert!(!s.auth_kill);
        assert_eq!(s.job_timeout, None);
        assert_eq!(s.retention.keep, 1000);
        assert_eq!(s.retention.max_bytes, 1 << 30);
        assert_eq!(s.run_log_max_bytes, 100 << 20);
        assert_eq!(s.listen.to_string(), "0.0.0.0:9464");
        assert!(s.auth_pattern.is_match(b"HTTP 401 Unauthorized"));
    }

    #[test]
    fn each_bad_value_is_one_line_naming_variable_flag_and_value() {
        let cases: &[(&[&str], &str)] = &[
            (&["--backoff-factor", "0"], "AGENT_BACKOFF_FACTOR"),
            (
                &["--backoff-max", "1s", "--backoff-start", "5s"],
                "AGENT_BACKOFF_MAX",
            ),
            (&["--idle-sleep", "soon"], "AGENT_IDLE_SLEEP"),
            (&["--auth-pattern", "(unclosed"], "AGENT_AUTH_PATTERN"),
            (&["--listen", "nowhere"], "AGENT_LISTEN"),
            (&["--log-max-bytes", "lots"], "AGENT_LOG_MAX_BYTES"),
            (&["--backoff-jitter", "2"], "AGENT_BACKOFF_JITTER"),
            (&["--auth-kill=maybe"], "AGENT_AUTH_KILL"),
            (&["--log-format", "xml"], "AGENT_LOG_FORMAT"),
            (&["--max-failures=-1"], "AGENT_MAX_FAILURES"),
            (&["--idle-sleep=5\nrm -rf /"], "AGENT_IDLE_SLEEP"),
        ];
        for (flags, variable) in cases {
            let mut argv = flags.to_vec();
            argv.extend(["--", "true"]);
            let errors = parse(&argv).expect_err(variable);
            assert_eq!(errors.0.len(), 1, "{variable}: {errors}");
            let line = errors.to_string();
            assert!(!line.contains('\n'), "{line}");
            assert!(line.contains(variable), "{line}");
        }
    }

    #[test]
    fn urls_lose_their_user_info() {
        assert_eq!(redact_url("http://u:p@h:4317/x@y"), "http://***@h:4317/x@y");
        assert_eq!(redact_url("http://h:4317"), "http://h:4317");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn empty_command_is_rejected() {
        let errors = parse(&[]).expect_err("no command");
        assert!(errors.to_string().contains("COMMAND"), "{errors}");
    }

    #[test]
    fn unknown_otlp_protocol_is_rejected() {
        let mut errors = Vec::new();
        let otlp = otlp_from_env(
            |name| (name == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| "http/json".to_string()),
            &mut errors,
        );
        assert_eq!(otlp.endpoint, None);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn sdk_disabled_turns_export_off() {
        let mut errors = Vec::new();
        let otlp = otlp_from_env(
            |name| match name {
                "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://127.0.0.1:4317".into()),
                "OTEL_SDK_DISABLED" => Some("true".into()),
                _ => None,
            },
            &mut errors,
        );
        assert_eq!(otlp.endpoint, None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_values_give_settings_or_one_line_errors(
                listen in "\\PC{0,20}",
                pattern in "\\PC{0,20}",
                factor in "\\PC{0,8}",
                size in "\\PC{0,8}",
                sleep in "\\PC{0,8}",
            ) {
                let flags = [
                    format!("--listen={listen}"),
                    format!("--auth-pattern={pattern}"),
                    format!("--backoff-factor={factor}"),
                    format!("--log-max-bytes={size}"),
                    format!("--idle-sleep={sleep}"),
                ];
                let mut argv: Vec<&str> = flags.iter().map(String::as_str).collect();
                argv.extend(["--", "true"]);
                match parse(&argv) {
                    Ok(settings) => prop_assert!(settings.backoff.factor >= 1.0),
                    Err(errors) => {
                        for error in &errors.0 {
                            let line = error.to_string();
                            prop_assert!(line.starts_with("invalid value"), "{}", line);
                            prop_assert!(line.contains("AGENT_") || line.contains("OTEL_"), "{}", line);
                        }
                    }
                }
            }
        }
    }
}
