//! A state.json read back, typed ([`StoredState`]): by a restarted
//! jobloop (was it interrupted?) and by `jobloop status`. Kept apart from
//! the [`Snapshot`](super::Snapshot) it mirrors because it reads leniently
//! what the snapshot writes strictly.

use std::time::SystemTime;

use serde::{Deserialize, Deserializer};

use super::{Outcome, Reason, Status};

/// A state.json read back (by a restarted jobloop, or `jobloop status`),
/// typed. Every key is optional and read leniently: a missing key, a wrong
/// type or an unknown word gives `None` for that key alone, so a file from
/// another version or a tampered one still yields what it can.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StoredState {
    /// `status`.
    #[serde(deserialize_with = "lenient_status")]
    pub status: Option<Status>,
    /// `reason`.
    #[serde(deserialize_with = "lenient_reason")]
    pub reason: Option<Reason>,
    /// `currentBatchStartedAt`.
    #[serde(deserialize_with = "lenient_time")]
    pub current_batch_started_at: Option<SystemTime>,
    /// `consecutiveFailures`.
    #[serde(deserialize_with = "lenient")]
    pub consecutive_failures: Option<u32>,
    /// `lastBatchAt`.
    #[serde(deserialize_with = "lenient_time")]
    pub last_batch_at: Option<SystemTime>,
    /// `lastBatchExit`.
    #[serde(deserialize_with = "lenient")]
    pub last_batch_exit: Option<i32>,
    /// `lastOutcome`.
    #[serde(deserialize_with = "lenient_outcome")]
    pub last_outcome: Option<Outcome>,
    /// `lastSuccessAt`.
    #[serde(deserialize_with = "lenient_time")]
    pub last_success_at: Option<SystemTime>,
    /// `iteration`.
    #[serde(deserialize_with = "lenient")]
    pub iteration: Option<u64>,
    /// `backoffSeconds`.
    #[serde(deserialize_with = "lenient")]
    pub backoff_seconds: Option<f64>,
    /// `runLog`.
    #[serde(deserialize_with = "lenient")]
    pub run_log: Option<String>,
    /// `traceId`.
    #[serde(deserialize_with = "lenient")]
    pub trace_id: Option<String>,
    /// `pid`.
    #[serde(deserialize_with = "lenient")]
    pub pid: Option<u32>,
    /// `jobPid`.
    #[serde(deserialize_with = "lenient")]
    pub job_pid: Option<u32>,
    /// `version`.
    #[serde(deserialize_with = "lenient")]
    pub version: Option<String>,
    /// `instance`.
    #[serde(deserialize_with = "lenient")]
    pub instance: Option<String>,
    /// `statusSince`.
    #[serde(deserialize_with = "lenient_time")]
    pub status_since: Option<SystemTime>,
}

impl StoredState {
    /// Parses state.json's bytes.
    ///
    /// # Errors
    ///
    /// When the bytes are not a JSON object.
    pub fn from_json(bytes: &[u8]) -> Result<StoredState, serde_json::Error> {
        StoredState::from_value(serde_json::from_slice(bytes)?)
    }

    /// Reads an already parsed state.json (or `/state` answer).
    ///
    /// # Errors
    ///
    /// When the value is not a JSON object.
    pub fn from_value(value: serde_json::Value) -> Result<StoredState, serde_json::Error> {
        // serde would take an array for the fields in order.
        if !value.is_object() {
            return Err(serde::de::Error::custom("state.json is not a JSON object"));
        }
        serde_json::from_value(value)
    }
}

/// Any JSON value, turned into `T` if it fits, else `None`.
fn lenient<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

fn lenient_word<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, D::Error> {
    Ok(lenient::<D, String>(d)?.as_deref().and_then(parse))
}

fn lenient_status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Status>, D::Error> {
    lenient_word(d, Status::parse)
}

fn lenient_reason<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Reason>, D::Error> {
    lenient_word(d, Reason::parse)
}

fn lenient_outcome<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Outcome>, D::Error> {
    lenient_word(d, Outcome::parse)
}

fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
    Ok(lenient::<D, String>(d)?.and_then(|text| humantime::parse_rfc3339(&text).ok()))
}
