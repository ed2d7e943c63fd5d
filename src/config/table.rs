//! The one list of jobloop's settings.
//!
//! Every `AGENT_*` setting is one row of [`SETTINGS`]: its variable, flag,
//! default, value name, help text, value [`Form`] (how it is parsed and
//! checked) and how `jobloop check` describes its effective value. The clap
//! definitions (`cli`), `check`'s output ([`Settings::describe`]), the
//! README's settings table and `tests/deploy/settings.txt` all come from
//! here; the last two are rendered by [`readme_table`] and
//! [`settings_txt`] and compared with the files by a unit test, so the
//! documents cannot drift from the code (`UPDATE_GOLDEN=1` rewrites them).
//!
//! Adding a setting is a row here plus its parse in
//! [`Settings::from_raw`](super::Settings::from_raw) and its field in
//! [`Settings`].

use std::path::Path;

use super::units::{format_duration, format_size};
use super::{LogFormat, Settings};

/// The seed's pattern, made case-insensitive (BASELINE Q3).
pub const DEFAULT_AUTH_PATTERN: &str =
    r"(?i)(invalid_api_key|authentication.*failed|401.*unauthor|OAuth.*expired)";

/// How a setting's raw value is parsed and checked, beyond its own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A whole number ≥ 0.
    Count,
    /// A duration of at most 100 years; 0 allowed.
    Duration,
    /// A duration of at most 100 years; 0 turns the feature off.
    DurationOrOff,
    /// A duration of at most 100 years and more than 0: a limit of 0 would
    /// stop the command at once, so it is a bad setting.
    Timeout,
    /// A size in bytes or binary units.
    Size,
    /// `true` or `false`; the bare flag means `true`.
    Bool,
    /// A shell command (`sh -c`); `check` shows its program and the number
    /// of its other words, since arguments may carry credentials.
    Command,
    /// One of a few words (`text`, `json`); anything else is a bad
    /// setting naming them.
    Choice(&'static [&'static str]),
    /// A secret: its value is never shown, in `--help` or by `check`.
    Secret,
    /// Anything else, checked by its own parse in `Settings::from_raw`.
    Text,
}

/// One setting: everything the command line, `check` and the documents
/// need to know about it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Environment variable, `AGENT_*`.
    pub variable: &'static str,
    /// Long flag, `--max-failures`.
    pub flag: &'static str,
    /// Default as a raw value; `None` = unset.
    pub default: Option<&'static str>,
    /// Placeholder of the value in `--help` (`DURATION`, `N`, ...).
    pub value_name: &'static str,
    /// One line for `--help` and the README's "meaning" column.
    pub help: &'static str,
    /// How the value is parsed and checked.
    pub form: Form,
    /// The effective value as `check` prints it.
    pub describe: fn(&Settings) -> String,
}

/// Every `AGENT_*` setting, in the order `--help`, `check` and the README
/// list them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        variable: "AGENT_MAX_FAILURES",
        flag: "--max-failures",
        default: Some("5"),
        value_name: "N",
        help: "consecutive failures that make the daemon unhealthy; 0 = never",
        form: Form::Count,
        describe: |s| s.max_failures.to_string(),
    },
    Setting {
        variable: "AGENT_BACKOFF_START",
        flag: "--backoff-start",
        default: Some("5s"),
        value_name: "DURATION",
        help: "first backoff after a failure",
        form: Form::Duration,
        describe: |s| format_duration(s.backoff.start),
    },
    Setting {
        variable: "AGENT_BACKOFF_FACTOR",
        flag: "--backoff-factor",
        default: Some("2"),
        value_name: "FACTOR",
        help: "multiplier per failure (≥ 1, fractions allowed)",
        form: Form::Text,
        describe: |s| s.backoff.factor.to_string(),
    },
    Setting {
        variable: "AGENT_BACKOFF_MAX",
        flag: "--backoff-max",
        default: Some("300s"),
        value_name: "DURATION",
        help: "cap of the backoff (≥ AGENT_BACKOFF_START)",
        form: Form::Duration,
        describe: |s| format_duration(s.backoff.max),
    },
    Setting {
        variable: "AGENT_BACKOFF_JITTER",
        flag: "--backoff-jitter",
        default: Some("0"),
        value_name: "FRACTION",
        help: "fraction 0..1 of each backoff that is randomised (0 = the seed's exact sequence)",
        form: Form::Text,
        describe: |s| s.backoff.jitter.to_string(),
    },
    Setting {
        variable: "AGENT_IDLE_SLEEP",
        flag: "--idle-sleep",
        default: Some("2s"),
        value_name: "DURATION",
        help: "sleep after a run that exited 0",
        form: Form::Duration,
        describe: |s| format_duration(s.idle_sleep),
    },
    Setting {
        variable: "AGENT_AUTH_EXIT_CODE",
        flag: "--auth-exit-code",
        default: Some("3"),
        value_name: "CODE",
        help: "exit code that means the credentials expired (1..255)",
        form: Form::Text,
        describe: |s| s.auth_exit_code.to_string(),
    },
    Setting {
        variable: "AGENT_AUTH_PATTERN",
        flag: "--auth-pattern",
        default: Some(DEFAULT_AUTH_PATTERN),
        value_name: "REGEX",
        help: "regex; a match in any line of the run's output means the credentials expired",
        form: Form::Text,
        describe: |s| s.auth_pattern.as_str().to_string(),
    },
    Setting {
        variable: "AGENT_AUTH_KILL",
        flag: "--auth-kill",
        default: Some("false"),
        value_name: "BOOL",
        help: "stop the job as soon as the pattern matches, instead of after it exits",
        form: Form::Bool,
        describe: |s| s.auth_kill.to_string(),
    },
    Setting {
        variable: "AGENT_EXIT_POLICY",
        flag: "--exit-policy",
        default: None,
        value_name: "RULES",
        help: "rules `CODES=ACTION`, comma-separated, first match wins: CODES `N` or `N-M` \
               (0..255, 128+N for signal N), ACTION success, failure, skip, halt or \
               token_expired (e.g. `75=skip`); the auth code and pattern and timeouts go first",
        form: Form::Text,
        describe: |s| s.exit_policy.to_string(),
    },
    Setting {
        variable: "AGENT_JOB_TIMEOUT",
        flag: "--job-timeout",
        default: Some("0"),
        value_name: "DURATION",
        help: "a run longer than this is stopped and counts as a failure (outcome `timeout`); \
               0 = none",
        form: Form::DurationOrOff,
        describe: |s| optional_duration(s.job_timeout),
    },
    Setting {
        variable: "AGENT_KILL_GRACE",
        flag: "--kill-grace",
        default: Some("10s"),
        value_name: "DURATION",
        help: "SIGTERM → SIGKILL when jobloop stops a job (timeout, auth kill, a drain's end)",
        form: Form::Duration,
        describe: |s| format_duration(s.kill_grace),
    },
    Setting {
        variable: "AGENT_SHUTDOWN_GRACE",
        flag: "--shutdown-grace",
        default: Some("25s"),
        value_name: "DURATION",
        help: "SIGTERM → SIGKILL for the job on jobloop's own shutdown \
               (under `drain`: how long it may still finish on its own)",
        form: Form::Duration,
        describe: |s| format_duration(s.shutdown_grace),
    },
    Setting {
        variable: "AGENT_STOP_MODE",
        flag: "--stop-mode",
        default: Some("terminate"),
        value_name: "MODE",
        help: "on SIGTERM: `terminate` passes SIGTERM to the job at once; `drain` lets it \
               finish within AGENT_SHUTDOWN_GRACE, then SIGTERM and SIGKILL after AGENT_KILL_GRACE",
        form: Form::Choice(&["terminate", "drain"]),
        describe: |s| s.stop_mode.as_str().to_string(),
    },
    Setting {
        variable: "AGENT_HALT_ACTION",
        flag: "--halt-action",
        default: Some("wait"),
        value_name: "ACTION",
        help: "on a halt: `wait` stays up until a resume; `exit` ends jobloop with exit code \
               69 (unhealthy) or 77 (token expired)",
        form: Form::Choice(&["wait", "exit"]),
        describe: |s| s.halt_action.as_str().to_string(),
    },
    Setting {
        variable: "AGENT_PREFLIGHT_CMD",
        flag: "--preflight",
        default: None,
        value_name: "COMMAND",
        help: "shell command run once before the loop (the seed's check-tokens.sh); \
               non-zero = failed",
        form: Form::Command,
        describe: |s| describe_shell(s.preflight_cmd.as_deref()),
    },
    Setting {
        variable: "AGENT_PREFLIGHT_TIMEOUT",
        flag: "--preflight-timeout",
        default: Some("60s"),
        value_name: "DURATION",
        help: "longest the preflight may run (> 0)",
        form: Form::Timeout,
        describe: |s| format_duration(s.preflight_timeout),
    },
    Setting {
        variable: "AGENT_RECOVER_INTERVAL",
        flag: "--recover-interval",
        default: Some("0"),
        value_name: "DURATION",
        help: "while halted, re-run the preflight this often and resume when it passes; 0 = off",
        form: Form::DurationOrOff,
        describe: |s| optional_duration(s.recover_interval),
    },
    Setting {
        variable: "AGENT_LOG_DIR",
        flag: "--log-dir",
        default: Some("./jobloop-data/logs"),
        value_name: "DIR",
        help: "run logs go to `runs/` below it",
        form: Form::Text,
        describe: |s| s.log_dir.display().to_string(),
    },
    Setting {
        variable: "AGENT_STATE_DIR",
        flag: "--state-dir",
        default: Some("./jobloop-data/state"),
        value_name: "DIR",
        help: "state.json and marker files",
        form: Form::Text,
        describe: |s| s.state_dir.display().to_string(),
    },
    Setting {
        variable: "AGENT_LOG_KEEP",
        flag: "--log-keep",
        default: Some("1000"),
        value_name: "N",
        help: "run logs kept (newest first); 0 = no count limit",
        form: Form::Count,
        describe: |s| s.retention.keep.to_string(),
    },
    Setting {
        variable: "AGENT_LOG_MAX_AGE",
        flag: "--log-max-age",
        default: Some("14d"),
        value_name: "DURATION",
        help: "older run logs are deleted; 0 = no age limit",
        form: Form::DurationOrOff,
        describe: |s| optional_duration(s.retention.max_age),
    },
    Setting {
        variable: "AGENT_LOG_MAX_BYTES",
        flag: "--log-max-bytes",
        default: Some("1GiB"),
        value_name: "SIZE",
        help: "total size of `runs/`, oldest deleted first; 0 = no limit",
        form: Form::Size,
        describe: |s| format_size(s.retention.max_bytes),
    },
    Setting {
        variable: "AGENT_RUN_LOG_MAX_BYTES",
        flag: "--run-log-max-bytes",
        default: Some("100MiB"),
        value_name: "SIZE",
        help: "per run: output past it is read, scanned and counted but not written; \
               0 = no limit",
        form: Form::Size,
        describe: |s| format_size(s.run_log_max_bytes),
    },
    Setting {
        variable: "AGENT_ROTATE_CMD",
        flag: "--rotate-cmd",
        default: None,
        value_name: "COMMAND",
        help: "shell command run at start and after each iteration (the seed's rotate-logs.sh)",
        form: Form::Command,
        describe: |s| describe_shell(s.rotate_cmd.as_deref()),
    },
    Setting {
        variable: "AGENT_CLEANUP_CMD",
        flag: "--cleanup-cmd",
        default: None,
        value_name: "COMMAND",
        help: "shell command run after the rotate command (the seed's log-cleanup.sh)",
        form: Form::Command,
        describe: |s| describe_shell(s.cleanup_cmd.as_deref()),
    },
    Setting {
        variable: "AGENT_HOOK_TIMEOUT",
        flag: "--hook-timeout",
        default: Some("60s"),
        value_name: "DURATION",
        help: "longest a rotate or cleanup command may run (> 0)",
        form: Form::Timeout,
        describe: |s| format_duration(s.hook_timeout),
    },
    Setting {
        variable: "AGENT_LISTEN",
        flag: "--listen",
        default: Some("0.0.0.0:9464"),
        value_name: "ADDR",
        help: "HTTP server address (`IP:PORT`, `[::]:PORT`, `:PORT`, `localhost:PORT`)",
        form: Form::Text,
        describe: |s| s.listen.to_string(),
    },
    Setting {
        variable: "AGENT_ADMIN_TOKEN",
        flag: "--admin-token",
        default: None,
        value_name: "TOKEN",
        help: "bearer token that `POST /resume` requires; without it `/resume` answers 403",
        form: Form::Secret,
        describe: |s| {
            let set = s.admin_token.is_some();
            if set { "(set, hidden)" } else { "" }.to_string()
        },
    },
    Setting {
        variable: "AGENT_ADMIN_TOKEN_FILE",
        flag: "--admin-token-file",
        default: None,
        value_name: "FILE",
        help: "file holding that token (a mounted Secret), read at start; \
               used when no token is given",
        form: Form::Text,
        describe: |s| {
            let file = s.admin_token_file.as_deref();
            file.map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default()
        },
    },
    Setting {
        variable: "AGENT_LOG_FORMAT",
        flag: "--log-format",
        default: Some("text"),
        value_name: "FORMAT",
        help: "the daemon's own log on stderr: `text` or `json`",
        form: Form::Choice(&["text", "json"]),
        describe: |s| match s.log_format {
            LogFormat::Text => "text".to_string(),
            LogFormat::Json => "json".to_string(),
        },
    },
    Setting {
        variable: "AGENT_LOG_LEVEL",
        flag: "--log-level",
        default: Some("info"),
        value_name: "FILTER",
        help: "tracing filter for the daemon's own log (`info`, `warn`, `jobloop=debug`)",
        form: Form::Text,
        describe: |s| s.log_level.clone(),
    },
];

/// The row of `variable`.
///
/// # Panics
///
/// When no row has that variable: a typo in jobloop's own code, which the
/// unit tests (they parse every setting) catch.
pub fn setting(variable: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|row| row.variable == variable)
        .unwrap_or_else(|| panic!("{variable} is not a row of config::table::SETTINGS"))
}

/// A duration that 0 turns off, as `check` prints it.
fn optional_duration(duration: Option<std::time::Duration>) -> String {
    duration.map_or_else(|| "0".to_string(), format_duration)
}

/// A shell command as `check` shows it: its program and the number of its
/// other words, the way the job's COMMAND is shown, since the arguments may
/// carry credentials. A first word that is not a plain program name (an
/// assignment such as `TOKEN=... cmd`, quotes, expansions) is hidden too.
pub fn describe_shell(command: Option<&str>) -> String {
    let Some(command) = command else {
        return String::new();
    };
    let mut words = command.split_whitespace();
    let program = words.next().unwrap_or_default();
    let plain = program
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c));
    let shown = if plain { program } else { "(program hidden)" };
    format!("{shown} ({} arguments)", words.count())
}

/// The README's settings table (Markdown), rendered from [`SETTINGS`].
pub fn readme_table() -> String {
    let mut out = String::from("| variable | flag | default | meaning |\n|---|---|---|---|\n");
    for row in SETTINGS {
        let default = match row.default {
            None => "none".to_string(),
            Some(value) if value.contains(['|', '*', '_', '\\']) => {
                format!("`{}`", value.replace('|', "\\|"))
            }
            Some(value) => value.to_string(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.variable,
            row.flag,
            default,
            row.help.replace('|', "\\|")
        ));
    }
    out.push_str("| OTEL_* | | | standard OpenTelemetry variables, see [Traces](#traces) |\n");
    out
}

/// `tests/deploy/settings.txt`: every `AGENT_*` variable jobloop reads,
/// one a line, for the deployment lints.
pub fn settings_txt() -> String {
    let mut out = String::from(
        "# Every AGENT_* variable jobloop reads, one a line (SPEC section 1 and jobloop's own).\n\
         # Generated from src/config/table.rs: `UPDATE_GOLDEN=1 cargo test --lib config::table`\n\
         # rewrites it; a unit test fails when it drifts.\n",
    );
    for row in SETTINGS {
        out.push_str(row.variable);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the README's generated table starts and ends.
    const BEGIN: &str = "<!-- settings table: generated from src/config/table.rs -->\n\n";
    const END: &str = "\n<!-- end of settings table -->";

    fn repository_file(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
    }

    fn update_golden() -> bool {
        std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
    }

    #[test]
    fn the_readme_settings_table_is_the_rendered_table() {
        let path = repository_file("README.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find(BEGIN).expect("README has the begin marker") + BEGIN.len();
        let end = start + text[start..].find(END).expect("README has the end marker");
        let expected = readme_table();
        if update_golden() && text[start..end] != expected {
            let updated = format!("{}{expected}{}", &text[..start], &text[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        assert_eq!(
            text[start..end],
            expected,
            "README.md's settings table drifted from src/config/table.rs; \
             UPDATE_GOLDEN=1 cargo test --lib config::table rewrites it"
        );
    }

    #[test]
    fn tests_deploy_settings_txt_is_the_rendered_list() {
        let path = repository_file("tests/deploy/settings.txt");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let expected = settings_txt();
        if update_golden() && text != expected {
            std::fs::write(&path, &expected).unwrap();
            return;
        }
        assert_eq!(
            text, expected,
            "tests/deploy/settings.txt drifted from src/config/table.rs; \
             UPDATE_GOLDEN=1 cargo test --lib config::table rewrites it"
        );
    }

    #[test]
    fn rows_are_unique_and_well_formed() {
        for (index, row) in SETTINGS.iter().enumerate() {
            assert!(row.variable.starts_with("AGENT_"), "{}", row.variable);
            assert!(row.flag.starts_with("--"), "{}", row.flag);
            assert!(
                !row.help.is_empty() && !row.help.ends_with('.'),
                "{}",
                row.variable
            );
            for other in &SETTINGS[index + 1..] {
                assert_ne!(row.variable, other.variable);
                assert_ne!(row.flag, other.flag);
            }
            assert!(std::ptr::eq(setting(row.variable), row));
            if let Form::Choice(words) = row.form {
                assert!(
                    words.contains(&row.default.unwrap_or_default()),
                    "{}",
                    row.variable
                );
            }
        }
    }

    #[test]
    fn shell_commands_show_their_program_and_count_the_rest() {
        assert_eq!(describe_shell(None), "");
        assert_eq!(
            describe_shell(Some("/opt/check-tokens.sh --token s3cret")),
            "/opt/check-tokens.sh (2 arguments)"
        );
        assert_eq!(describe_shell(Some("logrotate")), "logrotate (0 arguments)");
        assert_eq!(
            describe_shell(Some("TOKEN=s3cret /opt/x.sh")),
            "(program hidden) (1 arguments)"
        );
        assert_eq!(
            describe_shell(Some("'s3cret' x")),
            "(program hidden) (1 arguments)"
        );
    }
}
