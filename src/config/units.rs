//! Parsing of the two value forms the settings share: durations and sizes.
//!
//! Durations keep the seed's form (a bare number is seconds, `5`, `0.5`) and
//! add humantime's (`500ms`, `5m`, `1h 30m`), up to [`MAX_DURATION`]. Sizes are bytes or binary
//! multiples (`64KiB`, `100MiB`, `1GiB`). Both return a short description of
//! what is allowed, so `config` can print one-line errors.

use std::time::Duration;

/// What a duration setting accepts, for error messages.
pub const DURATION_FORM: &str = "a duration up to 100 years: seconds as a number (5, 0.5) \
                                 or a humantime string (500ms, 5m, 1h 30m)";

/// The longest duration a setting may have: 100 years (humantime's, of
/// 365.25 days). Longer ones are mistakes, and one near `Duration::MAX`
/// added to a clock reading would overflow and abort the daemon; 100 years
/// added to any clock jobloop uses cannot.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// What a size setting accepts, for error messages.
pub const SIZE_FORM: &str = "a size: bytes (1048576) or a number with B, KiB, MiB, GiB or TiB";

/// Parses a duration: a bare non-negative number is seconds, anything else
/// goes to humantime. `None` for anything else, and for durations over
/// [`MAX_DURATION`].
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let text = raw.trim();
    if text.is_empty() {
        return None;
    }
    let duration = if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = text.parse().ok()?;
        Duration::try_from_secs_f64(seconds).ok()?
    } else {
        humantime::parse_duration(text).ok()?
    };
    (duration <= MAX_DURATION).then_some(duration)
}

/// Parses a size in bytes: a bare integer, or a number followed by one of
/// `B`, `KiB`, `MiB`, `GiB`, `TiB` (case-insensitive, space allowed).
pub fn parse_size(raw: &str) -> Option<u64> {
    let text = raw.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return None;
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        _ => return None,
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier);
    }
    let fractional: f64 = number.parse().ok()?;
    let bytes = fractional * multiplier as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then(|| bytes.round() as u64)
}

/// Formats a duration the way the settings accept it back (`5s`, `500ms`).
pub fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0".to_string();
    }
    humantime::format_duration(duration).to_string()
}

/// Formats a size in the largest binary unit that divides it.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (size, name) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{}", bytes / size, name);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seed_and_humantime_forms() {
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration(" 14d "),
            Some(Duration::from_secs(14 * 86400))
        );
    }

    #[test]
    fn durations_stop_at_100_years() {
        assert_eq!(parse_duration("100y"), Some(MAX_DURATION));
        assert_eq!(parse_duration("3155760000"), Some(MAX_DURATION));
        for long in [
            "3155760001",
            "3155760000.5",
            "10000000000000000000",
            "100y 1ns",
            "101y",
            "99999999999999999999999",
        ] {
            assert_eq!(parse_duration(long), None, "{long}");
        }
    }

    #[test]
    fn durations_reject_nonsense() {
        for bad in ["", "soon", "-5", "5 parsecs", "1..2", "ms", "1e3"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes_accept_bytes_and_binary_units() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("100MiB"), Some(100 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("64 KiB"), Some(64 << 10));
        assert_eq!(parse_size("1.5KiB"), Some(1536));
        assert_eq!(parse_size("10b"), Some(10));
    }

    #[test]
    fn sizes_reject_nonsense() {
        for bad in [
            "",
            "lots",
            "-1",
            "5 PB",
            "MiB",
            "1.2.3KiB",
            "99999999999999999999TiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for bytes in [0, 1, 1023, 1024, 100 << 20, 1 << 30, 3 << 40] {
            assert_eq!(parse_size(&format_size(bytes)), Some(bytes));
        }
        for duration in [
            Duration::ZERO,
            Duration::from_millis(50),
            Duration::from_secs(300),
        ] {
            assert_eq!(parse_duration(&format_duration(duration)), Some(duration));
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parsers_never_panic(text in "\\PC{0,24}") {
                let _ = parse_duration(&text);
                let _ = parse_size(&text);
            }

            #[test]
            fn bare_seconds_parse_as_seconds(seconds in 0u64..10_000_000) {
                prop_assert_eq!(parse_duration(&seconds.to_string()), Some(Duration::from_secs(seconds)));
            }

            #[test]
            fn sizes_round_trip(bytes in any::<u32>(), shift in 0u32..20) {
                let bytes = u64::from(bytes) << shift;
                prop_assert_eq!(parse_size(&format_size(bytes)), Some(bytes));
            }

            #[test]
            fn durations_round_trip(millis in 0u64..100_000_000_000) {
                let duration = Duration::from_millis(millis);
                prop_assert_eq!(parse_duration(&format_duration(duration)), Some(duration));
            }
        }
    }
}
