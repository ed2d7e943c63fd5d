//! Typed, cross-checked settings built from the raw command line.
//!
//! `cli` hands over strings exactly as the user gave them (flag, variable or
//! default); this module turns them into [`Settings`] and reports every bad
//! value as one line naming the variable, the flag, the value and what is
//! allowed (SPEC §1). Nothing is started or written before this succeeds.

pub mod units;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use regex::bytes::{Regex, RegexBuilder};

use crate::backoff::BackoffPolicy;
use crate::cli::RunArgs;
use crate::naming::RetentionPolicy;
use units::{format_duration, format_size, parse_duration, parse_size, DURATION_FORM, SIZE_FORM};

/// The seed's pattern, made case-insensitive (BASELINE Q3).
pub const DEFAULT_AUTH_PATTERN: &str =
    r"(?i)(invalid_api_key|authentication.*failed|401.*unauthor|OAuth.*expired)";

/// Format of the daemon's own log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// OTLP transport, from `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// gRPC (port 4317 by convention), the default.
    Grpc,
    /// HTTP with protobuf bodies (port 4318, path `/v1/traces`).
    HttpProtobuf,
}

/// What the OpenTelemetry exporter should do, read from the standard
/// `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The traces endpoint, when one is set and the SDK is not disabled.
    pub endpoint: Option<String>,
    /// Transport for that endpoint.
    pub protocol: OtlpProtocol,
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
    /// Longest a run may take; `None` = no limit.
    pub job_timeout: Option<Duration>,
    /// SIGTERM-to-SIGKILL grace when jobloop stops a job itself.
    pub kill_grace: Duration,
    /// SIGTERM-to-SIGKILL grace on jobloop's own shutdown.
    pub shutdown_grace: Duration,
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

/// Collects errors while each setting is parsed, so all are reported at once.
struct Checker {
    errors: Vec<ConfigError>,
}

impl Checker {
    fn fail(&mut self, variable: &'static str, flag: &'static str, value: &str, allowed: &str) {
        self.errors.push(ConfigError {
            variable,
            flag,
            value: value.to_string(),
            allowed: allowed.to_string(),
        });
    }

    fn duration(&mut self, variable: &'static str, flag: &'static str, raw: &str) -> Duration {
        parse_duration(raw).unwrap_or_else(|| {
            self.fail(variable, flag, raw, DURATION_FORM);
            Duration::ZERO
        })
    }

    fn size(&mut self, variable: &'static str, flag: &'static str, raw: &str) -> u64 {
        parse_size(raw).unwrap_or_else(|| {
            self.fail(variable, flag, raw, SIZE_FORM);
            0
        })
    }

    fn count(&mut self, variable: &'static str, flag: &'static str, raw: &str) -> u32 {
        raw.trim().parse().unwrap_or_else(|_| {
            self.fail(variable, flag, raw, "a whole number ≥ 0");
            0
        })
    }

    fn command(
        &mut self,
        variable: &'static str,
        flag: &'static str,
        raw: Option<String>,
    ) -> Option<String> {
        match raw {
            Some(text) if text.trim().is_empty() => {
                self.fail(variable, flag, &text, "a shell command, or leave it unset");
                None
            }
            other => other,
        }
    }
}

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

/// Reads the OTLP settings from the standard variables through `lookup`.
pub fn otlp_from_env(
    lookup: impl Fn(&str) -> Option<String>,
    checker_errors: &mut Vec<ConfigError>,
) -> OtlpSettings {
    let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    let disabled = non_empty("OTEL_SDK_DISABLED")
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"));
    let protocol = match non_empty("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| non_empty("OTEL_EXPORTER_OTLP_PROTOCOL"))
    {
        None => OtlpProtocol::Grpc,
        Some(value) => match value.trim() {
            "grpc" => OtlpProtocol::Grpc,
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            other => {
                checker_errors.push(ConfigError {
                    variable: "OTEL_EXPORTER_OTLP_PROTOCOL",
                    flag: "no flag",
                    value: other.to_string(),
                    allowed: "grpc or http/protobuf".to_string(),
                });
                OtlpProtocol::Grpc
            }
        },
    };
    let endpoint = non_empty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| non_empty("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .filter(|_| !disabled);
    OtlpSettings { endpoint, protocol }
}

/// An endpoint URL as it may be shown: user info (`user:password@`) is
/// replaced by `***@`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl Settings {
    /// Validates the raw arguments (and the `OTEL_*` variables read through
    /// `lookup`) into settings.
    ///
    /// # Errors
    ///
    /// Every bad value, one [`ConfigError`] each.
    pub fn from_args(
        args: &RunArgs,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigErrors> {
        let mut check = Checker { errors: Vec::new() };
        let c = &mut check;

        let max_failures = c.count("AGENT_MAX_FAILURES", "--max-failures", &args.max_failures);
        let start = c.duration(
            "AGENT_BACKOFF_START",
            "--backoff-start",
            &args.backoff_start,
        );
        let max = c.duration("AGENT_BACKOFF_MAX", "--backoff-max", &args.backoff_max);
        let factor = match args.backoff_factor.trim().parse::<f64>() {
            Ok(value) if value.is_finite() && value >= 1.0 => value,
            _ => {
                c.fail(
                    "AGENT_BACKOFF_FACTOR",
                    "--backoff-factor",
                    &args.backoff_factor,
                    "a number ≥ 1 (fractions allowed, e.g. 1.5)",
                );
                1.0
            }
        };
        let jitter = match args.backoff_jitter.trim().parse::<f64>() {
            Ok(value) if (0.0..=1.0).contains(&value) => value,
            _ => {
                c.fail(
                    "AGENT_BACKOFF_JITTER",
                    "--backoff-jitter",
                    &args.backoff_jitter,
                    "a fraction from 0 to 1",
                );
                0.0
            }
        };
        if parse_duration(&args.backoff_start).is_some()
            && parse_duration(&args.backoff_max).is_some()
            && max < start
        {
            c.fail(
                "AGENT_BACKOFF_MAX",
                "--backoff-max",
                &args.backoff_max,
                &format!(
                    "a duration ≥ AGENT_BACKOFF_START ({})",
                    format_duration(start)
                ),
            );
        }
        let idle_sleep = c.duration("AGENT_IDLE_SLEEP", "--idle-sleep", &args.idle_sleep);
        let auth_exit_code = match args.auth_exit_code.trim().parse::<i32>() {
            Ok(code) if (1..=255).contains(&code) => code,
            _ => {
                c.fail(
                    "AGENT_AUTH_EXIT_CODE",
                    "--auth-exit-code",
                    &args.auth_exit_code,
                    "an exit code from 1 to 255 (0 means success)",
                );
                3
            }
        };
        let auth_pattern = match build_auth_pattern(&args.auth_pattern) {
            Ok(regex) if !args.auth_pattern.is_empty() && !regex.is_match(b"") => Some(regex),
            Ok(_) => {
                c.fail(
                    "AGENT_AUTH_PATTERN",
                    "--auth-pattern",
                    &args.auth_pattern,
                    "a regex that does not match an empty line",
                );
                None
            }
            Err(error) => {
                let why = error.to_string();
                let last = why.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
                c.fail(
                    "AGENT_AUTH_PATTERN",
                    "--auth-pattern",
                    &args.auth_pattern,
                    &format!(
                        "a valid regex ({})",
                        last.trim().trim_start_matches("error: ")
                    ),
                );
                None
            }
        };
        let auth_kill = parse_bool(&args.auth_kill).unwrap_or_else(|| {
            c.fail(
                "AGENT_AUTH_KILL",
                "--auth-kill",
                &args.auth_kill,
                "true or false",
            );
            false
        });
        let job_timeout = c.duration("AGENT_JOB_TIMEOUT", "--job-timeout", &args.job_timeout);
        let kill_grace = c.duration("AGENT_KILL_GRACE", "--kill-grace", &args.kill_grace);
        let shutdown_grace = c.duration(
            "AGENT_SHUTDOWN_GRACE",
            "--shutdown-grace",
            &args.shutdown_grace,
        );
        let preflight_cmd = c.command(
            "AGENT_PREFLIGHT_CMD",
            "--preflight",
            args.preflight_cmd.clone(),
        );
        let preflight_timeout = c.duration(
            "AGENT_PREFLIGHT_TIMEOUT",
            "--preflight-timeout",
            &args.preflight_timeout,
        );
        if parse_duration(&args.preflight_timeout) == Some(Duration::ZERO) {
            c.fail(
                "AGENT_PREFLIGHT_TIMEOUT",
                "--preflight-timeout",
                &args.preflight_timeout,
                "a duration > 0",
            );
        }
        let recover_interval = c.duration(
            "AGENT_RECOVER_INTERVAL",
            "--recover-interval",
            &args.recover_interval,
        );
        let log_dir = non_empty_path(c, "AGENT_LOG_DIR", "--log-dir", &args.log_dir);
        let state_dir = non_empty_path(c, "AGENT_STATE_DIR", "--state-dir", &args.state_dir);
        let keep = c.count("AGENT_LOG_KEEP", "--log-keep", &args.log_keep);
        let max_age = c.duration("AGENT_LOG_MAX_AGE", "--log-max-age", &args.log_max_age);
        let max_bytes = c.size(
            "AGENT_LOG_MAX_BYTES",
            "--log-max-bytes",
            &args.log_max_bytes,
        );
        let run_log_max_bytes = c.size(
            "AGENT_RUN_LOG_MAX_BYTES",
            "--run-log-max-bytes",
            &args.run_log_max_bytes,
        );
        let rotate_cmd = c.command("AGENT_ROTATE_CMD", "--rotate-cmd", args.rotate_cmd.clone());
        let cleanup_cmd = c.command(
            "AGENT_CLEANUP_CMD",
            "--cleanup-cmd",
            args.cleanup_cmd.clone(),
        );
        let hook_timeout = c.duration("AGENT_HOOK_TIMEOUT", "--hook-timeout", &args.hook_timeout);
        let listen = parse_listen(&args.listen).unwrap_or_else(|| {
            c.fail("AGENT_LISTEN", "--listen", &args.listen,
                   "an address HOST:PORT with an IP (0.0.0.0:9464, 127.0.0.1:9464, [::]:9464) or :PORT");
            SocketAddr::from(([0, 0, 0, 0], 9464))
        });
        let admin_token = admin_token(c, args);
        let log_format = match args.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                c.fail("AGENT_LOG_FORMAT", "--log-format", other, "text or json");
                LogFormat::Text
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&args.log_level).is_err()
            || args.log_level.trim().is_empty()
        {
            c.fail(
                "AGENT_LOG_LEVEL",
                "--log-level",
                &args.log_level,
                "a tracing filter such as info, warn or jobloop=debug",
            );
        }
        if args.command.is_empty() || args.command[0].is_empty() {
            c.fail(
                "COMMAND",
                "after --",
                &args.command.join(" "),
                "a program to run, e.g. jobloop run -- /opt/agent/bin/run-one-job.sh",
            );
        }
        let otlp = otlp_from_env(lookup, &mut c.errors);

        if !check.errors.is_empty() {
            return Err(ConfigErrors(check.errors));
        }
        Ok(Settings {
            command: args.command.clone(),
            max_failures,
            backoff: BackoffPolicy {
                start,
                factor,
                max,
                jitter,
            },
            idle_sleep,
            auth_exit_code,
            auth_pattern: auth_pattern.expect("an invalid pattern was reported as an error"),
            auth_kill,
            job_timeout: (!job_timeout.is_zero()).then_some(job_timeout),
            kill_grace,
            shutdown_grace,
            preflight_cmd,
            preflight_timeout,
            recover_interval: (!recover_interval.is_zero()).then_some(recover_interval),
            log_dir,
            state_dir,
            retention: RetentionPolicy {
                keep: keep as usize,
                max_age: (!max_age.is_zero()).then_some(max_age),
                max_bytes,
            },
            run_log_max_bytes,
            rotate_cmd,
            cleanup_cmd,
            hook_timeout,
            listen,
            admin_token,
            log_format,
            log_level: args.log_level.clone(),
            otlp,
        })
    }

    /// The effective settings as `VARIABLE=value` lines, secrets redacted,
    /// for `jobloop check`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let duration = |d: Duration| format_duration(d);
        let optional = |d: Option<Duration>| d.map_or_else(|| "0".to_string(), format_duration);
        let text = |s: &Option<String>| s.clone().unwrap_or_default();
        vec![
            ("AGENT_MAX_FAILURES", self.max_failures.to_string()),
            ("AGENT_BACKOFF_START", duration(self.backoff.start)),
            ("AGENT_BACKOFF_FACTOR", self.backoff.factor.to_string()),
            ("AGENT_BACKOFF_MAX", duration(self.backoff.max)),
            ("AGENT_BACKOFF_JITTER", self.backoff.jitter.to_string()),
            ("AGENT_IDLE_SLEEP", duration(self.idle_sleep)),
            ("AGENT_AUTH_EXIT_CODE", self.auth_exit_code.to_string()),
            ("AGENT_AUTH_PATTERN", self.auth_pattern.as_str().to_string()),
            ("AGENT_AUTH_KILL", self.auth_kill.to_string()),
            ("AGENT_JOB_TIMEOUT", optional(self.job_timeout)),
            ("AGENT_KILL_GRACE", duration(self.kill_grace)),
            ("AGENT_SHUTDOWN_GRACE", duration(self.shutdown_grace)),
            ("AGENT_PREFLIGHT_CMD", text(&self.preflight_cmd)),
            ("AGENT_PREFLIGHT_TIMEOUT", duration(self.preflight_timeout)),
            ("AGENT_RECOVER_INTERVAL", optional(self.recover_interval)),
            ("AGENT_LOG_DIR", self.log_dir.display().to_string()),
            ("AGENT_STATE_DIR", self.state_dir.display().to_string()),
            ("AGENT_LOG_KEEP", self.retention.keep.to_string()),
            ("AGENT_LOG_MAX_AGE", optional(self.retention.max_age)),
            ("AGENT_LOG_MAX_BYTES", format_size(self.retention.max_bytes)),
            (
                "AGENT_RUN_LOG_MAX_BYTES",
                format_size(self.run_log_max_bytes),
            ),
            ("AGENT_ROTATE_CMD", text(&self.rotate_cmd)),
            ("AGENT_CLEANUP_CMD", text(&self.cleanup_cmd)),
            ("AGENT_HOOK_TIMEOUT", duration(self.hook_timeout)),
            ("AGENT_LISTEN", self.listen.to_string()),
            (
                "AGENT_ADMIN_TOKEN",
                if self.admin_token.is_some() {
                    "(set, hidden)".into()
                } else {
                    String::new()
                },
            ),
            (
                "AGENT_LOG_FORMAT",
                if self.log_format == LogFormat::Json {
                    "json".into()
                } else {
                    "text".into()
                },
            ),
            ("AGENT_LOG_LEVEL", self.log_level.clone()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                self.otlp
                    .endpoint
                    .as_deref()
                    .map(redact_url)
                    .unwrap_or_default(),
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                if self.otlp.protocol == OtlpProtocol::Grpc {
                    "grpc".into()
                } else {
                    "http/protobuf".into()
                },
            ),
            // Arguments may carry credentials: the program and their number.
            (
                "COMMAND",
                format!("{} ({} arguments)", self.command[0], self.command.len() - 1),
            ),
        ]
    }
}

fn non_empty_path(
    c: &mut Checker,
    variable: &'static str,
    flag: &'static str,
    raw: &str,
) -> PathBuf {
    if raw.trim().is_empty() {
        c.fail(variable, flag, raw, "a directory path");
    }
    PathBuf::from(raw)
}

fn admin_token(c: &mut Checker, args: &RunArgs) -> Option<String> {
    if let Some(token) = args.admin_token.as_deref().filter(|t| !t.is_empty()) {
        return Some(token.to_string());
    }
    let path = args.admin_token_file.as_deref().filter(|p| !p.is_empty())?;
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
        Ok(_) => {
            c.fail(
                "AGENT_ADMIN_TOKEN_FILE",
                "--admin-token-file",
                path,
                "a file holding the token (it is empty)",
            );
            None
        }
        Err(error) => {
            c.fail(
                "AGENT_ADMIN_TOKEN_FILE",
                "--admin-token-file",
                path,
                &format!("a readable file holding the token ({error})"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(extra: &[&str]) -> Result<Settings, ConfigErrors> {
        let mut argv = vec!["jobloop", "run"];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).expect("clap accepts the flags");
        let crate::cli::CliCommand::Run(args) = cli.command else {
            unreachable!()
        };
        Settings::from_args(&args, |_| None)
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
