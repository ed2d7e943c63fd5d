//! AGENT_EXIT_POLICY: rules that say what a job's exit code means (SPEC §1,
//! §2), parsed once at start and looked up after every run.
//!
//! A policy is a comma-separated list of `CODES=ACTION` rules; CODES is one
//! exit code `N` or a range `N-M` (0..255, 128+N for a job killed by
//! signal N) and ACTION one of [`Action`]'s words. The first rule whose
//! codes hold the exit code decides. Where rules stand in the verdict (after
//! token expiry and timeouts, before the 0.1 rules) is decided by
//! `supervisor::classify`; this module only parses and looks up.
//!
//! A leaf: it imports nothing of the crate, so `config` (which parses it)
//! and the supervisor (which applies it) can both use it.

use std::fmt;

/// What a rule makes of an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A success: consecutive failures 0, backoff reset, idle sleep.
    Success,
    /// A failure: consecutive failures + 1, backoff (or the max-failures halt).
    Failure,
    /// Neither: outcome `skipped`, counters and backoff unchanged, idle sleep
    /// ("no work right now", e.g. EX_TEMPFAIL 75).
    Skip,
    /// A failure that halts at once as unhealthy (reason `exit-policy`).
    Halt,
    /// As the auth exit code: the credentials expired, halt.
    TokenExpired,
}

impl Action {
    /// Every action, in SPEC order.
    pub const ALL: [Action; 5] = [
        Action::Success,
        Action::Failure,
        Action::Skip,
        Action::Halt,
        Action::TokenExpired,
    ];

    /// The SPEC spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Success => "success",
            Action::Failure => "failure",
            Action::Skip => "skip",
            Action::Halt => "halt",
            Action::TokenExpired => "token_expired",
        }
    }

    fn parse(text: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
    }
}

/// One rule: the exit codes `low..=high` mean `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// First exit code of the range.
    pub low: u8,
    /// Last exit code of the range (`low` for a single code).
    pub high: u8,
    /// What those codes mean.
    pub action: Action,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}={}", self.low, self.action.as_str())
        } else {
            write!(f, "{}-{}={}", self.low, self.high, self.action.as_str())
        }
    }
}

/// The rules in the order given; empty = none (the 0.1 classification).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitPolicy {
    rules: Vec<Rule>,
}

/// A rule that does not parse: the rule as given and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad rule '{}': {why}", .rule.escape_debug())]
pub struct PolicyError {
    /// The rule as given (trimmed).
    pub rule: String,
    /// What is wrong with it.
    pub why: String,
}

impl ExitPolicy {
    /// Parses `CODES=ACTION[,CODES=ACTION...]`; an empty or blank text, or
    /// `none` (what `jobloop check` shows for no rules), is no rules.
    ///
    /// # Errors
    ///
    /// The first rule that is empty (`75=skip,`), has no `=`, a code that is
    /// not a number from 0 to 255, a reversed range, or an unknown action.
    pub fn parse(text: &str) -> Result<ExitPolicy, PolicyError> {
        if text.trim().is_empty() || text.trim() == "none" {
            return Ok(ExitPolicy::default());
        }
        let rules = text
            .split(',')
            .map(|rule| parse_rule(rule.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ExitPolicy { rules })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The action of the first rule whose codes hold `exit_code`.
    pub fn action(&self, exit_code: i32) -> Option<Action> {
        self.rules
            .iter()
            .find(|rule| (i32::from(rule.low)..=i32::from(rule.high)).contains(&exit_code))
            .map(|rule| rule.action)
    }
}

/// The rules as `jobloop check` shows them: `75=skip,3-5=failure`, or
/// `none`.
impl fmt::Display for ExitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rules.is_empty() {
            return f.write_str("none");
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{rule}")?;
        }
        Ok(())
    }
}

fn parse_rule(rule: &str) -> Result<Rule, PolicyError> {
    let bad = |why: String| PolicyError {
        rule: rule.to_string(),
        why,
    };
    if rule.is_empty() {
        return Err(bad("an empty rule (a stray comma?)".to_string()));
    }
    let Some((codes, action)) = rule.split_once('=') else {
        return Err(bad("no '=' (rules are CODES=ACTION)".to_string()));
    };
    let code = |text: &str| {
        let text = text.trim();
        // `u8` would also take `+7`; exit codes are plain digits.
        match text.parse::<u8>() {
            Ok(code) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(code),
            _ => Err(bad(format!("'{text}' is not an exit code from 0 to 255"))),
        }
    };
    let (low, high) = match codes.split_once('-') {
        Some((low, high)) => (code(low)?, code(high)?),
        None => {
            let single = code(codes)?;
            (single, single)
        }
    };
    if low > high {
        return Err(bad(format!("the range {low}-{high} is reversed")));
    }
    let action = action.trim();
    let action = Action::parse(action).ok_or_else(|| {
        let words: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        bad(format!(
            "unknown action '{action}' (one of {})",
            words.join(", ")
        ))
    })?;
    Ok(Rule { low, high, action })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_codes_ranges_and_actions_in_order() {
        let policy =
            ExitPolicy::parse(" 75=skip, 3-5=failure,0-10=success ,2=halt,9=token_expired")
                .unwrap();
        assert_eq!(
            policy.rules()[1],
            Rule {
                low: 3,
                high: 5,
                action: Action::Failure
            }
        );
        assert_eq!(policy.action(75), Some(Action::Skip));
        // The first rule that holds the code wins.
        assert_eq!(policy.action(4), Some(Action::Failure));
        assert_eq!(policy.action(2), Some(Action::Success));
        assert_eq!(policy.action(0), Some(Action::Success));
        assert_eq!(policy.action(11), None);
        assert_eq!(policy.action(-1), None);
        assert_eq!(policy.action(256), None);
        assert_eq!(
            policy.to_string(),
            "75=skip,3-5=failure,0-10=success,2=halt,9=token_expired"
        );
    }

    #[test]
    fn no_rules() {
        assert!(ExitPolicy::parse("").unwrap().is_empty());
        assert!(ExitPolicy::parse("  ").unwrap().is_empty());
        assert!(ExitPolicy::parse(" none").unwrap().is_empty());
        assert_eq!(ExitPolicy::default().to_string(), "none");
        assert_eq!(ExitPolicy::default().action(0), None);
    }

    #[test]
    fn every_action_word() {
        for action in Action::ALL {
            let policy = ExitPolicy::parse(&format!("0-255={}", action.as_str())).unwrap();
            assert_eq!(policy.action(255), Some(action));
        }
        let words: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(
            words,
            ["success", "failure", "skip", "halt", "token_expired"]
        );
    }

    #[test]
    fn bad_rules_are_named() {
        for (text, rule, why) in [
            ("75=maybe", "75=maybe", "unknown action 'maybe'"),
            ("75=skip,", "", "empty rule"),
            ("75=skip,,1=failure", "", "empty rule"),
            ("75", "75", "no '='"),
            ("256=skip", "256=skip", "'256' is not an exit code"),
            ("5-3=skip", "5-3=skip", "reversed"),
            ("-1=skip", "-1=skip", "'' is not an exit code"),
            ("x=skip", "x=skip", "'x' is not an exit code"),
            ("+7=skip", "+7=skip", "'+7' is not an exit code"),
            ("1-2-3=skip", "1-2-3=skip", "'2-3' is not an exit code"),
            ("=skip", "=skip", "'' is not an exit code"),
            ("1=", "1=", "unknown action ''"),
            ("1=Skip", "1=Skip", "unknown action 'Skip'"),
        ] {
            let error = ExitPolicy::parse(text).unwrap_err();
            assert_eq!(error.rule, rule, "{text}");
            assert!(error.why.contains(why), "{text}: {error}");
            assert!(!error.to_string().contains('\n'), "{error}");
        }
    }
}
