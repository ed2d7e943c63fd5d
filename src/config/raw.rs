//! The settings as given ([`RawSettings`]) and the checks of their form
//! ([`Checker`]): each raw value parsed by its row's [`Form`], every bad one
//! recorded as a [`ConfigError`] so that all are reported at once. What the
//! values mean together is decided in the parent module.

use std::collections::BTreeMap;
use std::time::Duration;

use super::table::{setting, Form, SETTINGS};
use super::units::{parse_duration, parse_size, DURATION_FORM, SIZE_FORM};
use super::{ConfigError, TIMEOUT_FORM};

/// The settings as given, before any check: one raw value per row of
/// [`SETTINGS`] (from the flag, the variable or the default, as
/// `cli` resolved them) and the job's command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSettings {
    /// Raw value by variable name; a row without a value is unset.
    values: BTreeMap<&'static str, String>,
    /// The job: program and arguments, as given after `--`.
    pub command: Vec<String>,
}

impl RawSettings {
    /// Every row at its default, and no command.
    pub fn defaults() -> RawSettings {
        let values = SETTINGS
            .iter()
            .filter_map(|row| Some((row.variable, row.default?.to_string())))
            .collect();
        RawSettings {
            values,
            command: Vec::new(),
        }
    }

    /// Sets the raw value of the row of `variable`.
    ///
    /// # Panics
    ///
    /// When `variable` is not a row of [`SETTINGS`].
    pub fn set(&mut self, variable: &str, value: impl Into<String>) -> &mut RawSettings {
        self.values.insert(setting(variable).variable, value.into());
        self
    }

    /// The raw value of the row of `variable`, if it has one.
    pub fn get(&self, variable: &str) -> Option<&str> {
        self.values.get(variable).map(String::as_str)
    }
}

/// Collects errors while each setting is parsed, so all are reported at once.
pub(super) struct Checker<'a> {
    pub(super) raw: &'a RawSettings,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    pub(super) fn fail(
        &mut self,
        variable: &'static str,
        flag: &'static str,
        value: &str,
        allowed: &str,
    ) {
        self.errors.push(ConfigError {
            variable,
            flag,
            value: value.to_string(),
            allowed: allowed.to_string(),
        });
    }

    /// Records that the row of `variable` has a bad value.
    pub(super) fn reject(&mut self, variable: &str, allowed: &str) {
        let row = setting(variable);
        let value = self.text(variable).to_string();
        self.errors.push(ConfigError {
            variable: row.variable,
            flag: row.flag,
            value,
            allowed: allowed.to_string(),
        });
    }

    /// The raw value of a row, or "" when unset.
    pub(super) fn text(&self, variable: &str) -> &'a str {
        self.raw.get(variable).unwrap_or_default()
    }

    /// The raw value of a row; unset or empty = `None`.
    pub(super) fn optional(&self, variable: &str) -> Option<&'a str> {
        self.raw.get(variable).filter(|value| !value.is_empty())
    }

    /// A duration row, checked by its [`Form`]: at most 100 years, and more
    /// than 0 for a timeout.
    pub(super) fn duration(&mut self, variable: &str) -> Duration {
        let raw = self.text(variable);
        let Some(duration) = parse_duration(raw) else {
            self.reject(variable, DURATION_FORM);
            return Duration::ZERO;
        };
        if setting(variable).form == Form::Timeout && duration.is_zero() {
            self.reject(variable, TIMEOUT_FORM);
        }
        duration
    }

    /// A duration row where 0 turns the feature off.
    pub(super) fn duration_or_off(&mut self, variable: &str) -> Option<Duration> {
        Some(self.duration(variable)).filter(|duration| !duration.is_zero())
    }

    pub(super) fn size(&mut self, variable: &str) -> u64 {
        let raw = self.text(variable);
        parse_size(raw).unwrap_or_else(|| {
            self.reject(variable, SIZE_FORM);
            0
        })
    }

    pub(super) fn count(&mut self, variable: &str) -> u32 {
        let raw = self.text(variable);
        raw.trim().parse().unwrap_or_else(|_| {
            self.reject(variable, "a whole number ≥ 0");
            0
        })
    }

    pub(super) fn number(
        &mut self,
        variable: &str,
        valid: impl Fn(f64) -> bool,
        allowed: &str,
    ) -> f64 {
        match self.text(variable).trim().parse::<f64>() {
            Ok(value) if valid(value) => value,
            _ => {
                self.reject(variable, allowed);
                f64::NAN
            }
        }
    }

    /// A [`Form::Choice`] row: the word given (trimmed), or `None` after
    /// reporting a word that is not one of the row's.
    pub(super) fn choice(&mut self, variable: &str) -> Option<&'static str> {
        let Form::Choice(words) = setting(variable).form else {
            self.reject(variable, "(jobloop bug: this setting is not a choice)");
            return None;
        };
        let given = self.text(variable).trim();
        let found = words.iter().copied().find(|word| *word == given);
        if found.is_none() {
            let allowed = match words {
                [one, two] => format!("{one} or {two}"),
                _ => format!("one of {}", words.join(", ")),
            };
            self.reject(variable, &allowed);
        }
        found
    }

    pub(super) fn command(&mut self, variable: &str) -> Option<String> {
        match self.raw.get(variable) {
            Some(text) if text.trim().is_empty() => {
                self.reject(variable, "a shell command, or leave it unset");
                None
            }
            other => other.map(str::to_string),
        }
    }
}
