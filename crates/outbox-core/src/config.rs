//! Configuration from environment variables, read once and purely: every
//! host (the Lambda function, the Functions host, the command) reads its
//! variables through [`Env`], over the process environment or a map in tests,
//! and the relay's own settings through [`RelayConfig::from_env`].

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::{RelayConfig, RetryPolicy};

/// PutEvents calls in flight at once (default 4, 1 to 64).
pub const ENV_MAX_CONCURRENCY: &str = "OUTBOX_MAX_CONCURRENCY";
/// Retries of transient failures within one batch (default 6, 0 to 1000).
pub const ENV_MAX_RETRIES: &str = "OUTBOX_MAX_RETRIES";
/// Backoff of the first retry in milliseconds (default 50).
pub const ENV_RETRY_BASE_MS: &str = "OUTBOX_RETRY_BASE_MS";
/// Largest backoff in milliseconds (default 5000).
pub const ENV_RETRY_MAX_MS: &str = "OUTBOX_RETRY_MAX_MS";
/// Time kept before a batch's deadline, in milliseconds (default 2000).
pub const ENV_DEADLINE_MARGIN_MS: &str = "OUTBOX_DEADLINE_MARGIN_MS";

/// The variables [`RelayConfig::from_env`] reads.
pub const RELAY_VARIABLES: &[&str] = &[
    ENV_MAX_CONCURRENCY,
    ENV_MAX_RETRIES,
    ENV_RETRY_BASE_MS,
    ENV_RETRY_MAX_MS,
    ENV_DEADLINE_MARGIN_MS,
];

/// A configuration problem: the whole host refuses to start, naming the
/// variable and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required variable is not set (or empty).
    #[error("the environment variable {name} is not set; it is required")]
    Missing {
        /// The variable.
        name: &'static str,
    },
    /// A variable's value cannot be used.
    #[error("the environment variable {name} is {value:?}, which cannot be used: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong, and what it may be.
        reason: String,
    },
}

/// Variables read through a lookup function (a name to its value).
pub struct Env<F> {
    lookup: F,
}

impl Env<fn(&str) -> Option<String>> {
    /// The process environment.
    pub fn process() -> Self {
        Self {
            lookup: |name| std::env::var(name).ok(),
        }
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// Variables read through `lookup`.
    pub fn new(lookup: F) -> Self {
        Self { lookup }
    }

    /// The variable's value, unless it is unset or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// The variable's value; an error naming it when it is unset or blank.
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.text(name).ok_or(ConfigError::Missing { name })
    }

    /// A whole number in `range`, or `default` when unset.
    pub fn number(
        &self,
        name: &'static str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let Some(value) = self.text(name) else {
            return Ok(default);
        };
        match value.trim().parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            Ok(_) => Err(ConfigError::Invalid {
                name,
                value,
                reason: format!(
                    "it must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            }),
            Err(_) => Err(ConfigError::Invalid {
                name,
                value,
                reason: format!(
                    "it must be a whole number from {} to {}, without a unit",
                    range.start(),
                    range.end()
                ),
            }),
        }
    }

    /// A duration given in milliseconds, in `range`, or `default` when unset.
    pub fn millis(
        &self,
        name: &'static str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.number(name, default, range).map(Duration::from_millis)
    }

    /// A count in `range` (which must fit a `usize`), or `default` when unset.
    pub fn count(
        &self,
        name: &'static str,
        default: usize,
        range: RangeInclusive<usize>,
    ) -> Result<usize, ConfigError> {
        let wide = (*range.start() as u64)..=(*range.end() as u64);
        let n = self.number(name, default as u64, wide)?;
        Ok(usize::try_from(n).unwrap_or(default))
    }
}

impl RelayConfig {
    /// The relay's settings from [`RELAY_VARIABLES`], the defaults
    /// ([`RelayConfig::default`]) for those unset.
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let base_delay = env.millis(ENV_RETRY_BASE_MS, 50, 1..=600_000)?;
        let max_delay = env.millis(ENV_RETRY_MAX_MS, 5000, 1..=600_000)?;
        if base_delay > max_delay {
            return Err(ConfigError::Invalid {
                name: ENV_RETRY_BASE_MS,
                value: base_delay.as_millis().to_string(),
                reason: format!(
                    "it must not exceed {ENV_RETRY_MAX_MS} ({} ms)",
                    max_delay.as_millis()
                ),
            });
        }
        let max_retries = env.number(ENV_MAX_RETRIES, u64::from(defaults.retry.max_retries), 0..=1000)?;
        Ok(Self {
            retry: RetryPolicy {
                max_retries: u32::try_from(max_retries).unwrap_or(defaults.retry.max_retries),
                base_delay,
                max_delay,
            },
            max_concurrency: env.count(ENV_MAX_CONCURRENCY, defaults.max_concurrency, 1..=64)?,
            deadline_margin: env.millis(ENV_DEADLINE_MARGIN_MS, 2000, 0..=600_000)?,
        })
    }
}

/// The `OUTBOX_*` variables among `names` that no entry of `known` spells,
/// each with the closest known name when one is near (an edit distance of
/// at most a third of its length): for a warning at start-up, since a
/// misspelt variable is otherwise silently ignored.
pub fn unknown_variables<'k>(
    names: impl IntoIterator<Item = String>,
    known: &[&'k str],
) -> Vec<(String, Option<&'k str>)> {
    let mut unknown: Vec<(String, Option<&'k str>)> = names
        .into_iter()
        .filter(|name| name.starts_with("OUTBOX_") && !known.contains(&name.as_str()))
        .map(|name| {
            let closest = known
                .iter()
                .map(|k| (edit_distance(&name, k), *k))
                .min()
                .filter(|(d, _)| *d <= name.len() / 3)
                .map(|(_, k)| k);
            (name, closest)
        })
        .collect();
    unknown.sort();
    unknown
}

/// Levenshtein distance, over bytes (variable names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Env::new(move |name: &str| vars.get(name).cloned())
    }

    #[test]
    fn unset_variables_take_the_defaults() {
        assert_eq!(RelayConfig::from_env(&env(&[])).unwrap(), RelayConfig::default());
    }

    #[test]
    fn set_variables_are_read() {
        let c = RelayConfig::from_env(&env(&[
            (ENV_MAX_CONCURRENCY, "8"),
            (ENV_MAX_RETRIES, "0"),
            (ENV_RETRY_BASE_MS, "10"),
            (ENV_RETRY_MAX_MS, "100"),
            (ENV_DEADLINE_MARGIN_MS, "500"),
        ]))
        .unwrap();
        assert_eq!(c.max_concurrency, 8);
        assert_eq!(c.retry.max_retries, 0);
        assert_eq!(c.retry.base_delay, Duration::from_millis(10));
        assert_eq!(c.retry.max_delay, Duration::from_millis(100));
        assert_eq!(c.deadline_margin, Duration::from_millis(500));
    }

    #[test]
    fn bad_values_are_refused_in_a_sentence_naming_the_variable() {
        for (name, value, says) in [
            (ENV_MAX_CONCURRENCY, "0", "from 1 to 64"),
            (ENV_MAX_CONCURRENCY, "four", "without a unit"),
            (ENV_MAX_RETRIES, "-1", "from 0 to 1000"),
            (ENV_RETRY_BASE_MS, "10s", "without a unit"),
        ] {
            let err = RelayConfig::from_env(&env(&[(name, value)])).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(name) && text.contains(value) && text.contains(says),
                "{text}"
            );
        }
        let err = RelayConfig::from_env(&env(&[(ENV_RETRY_BASE_MS, "900"), (ENV_RETRY_MAX_MS, "100")]))
            .unwrap_err();
        assert!(err.to_string().contains(ENV_RETRY_MAX_MS), "{err}");
        let missing = env(&[("X", " ")]).required("X").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "the environment variable X is not set; it is required"
        );
    }

    #[test]
    fn unknown_variables_are_named_with_the_closest_known_one() {
        let known = [ENV_MAX_RETRIES, ENV_MAX_CONCURRENCY, "OUTBOX_TABLE_NAME"];
        let found = unknown_variables(
            [
                "OUTBOX_MAX_RETRY".to_owned(),
                "OUTBOX_TABLE_NAME".to_owned(),
                "OUTBOX_SOMETHING_ELSE_ENTIRELY".to_owned(),
                "PATH".to_owned(),
            ],
            &known,
        );
        assert_eq!(
            found,
            vec![
                ("OUTBOX_MAX_RETRY".to_owned(), Some(ENV_MAX_RETRIES)),
                ("OUTBOX_SOMETHING_ELSE_ENTIRELY".to_owned(), None),
            ]
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
