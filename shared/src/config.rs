//! Settings from the environment, read and validated once at start-up.
//!
//! Each setting is declared once as an [`EnvVar`] (name, what it expects, default), so the error
//! for a bad value names the variable and what it expects, and the full list of a binary's
//! settings can be checked against the deployment template.

use std::fmt::Display;
use std::str::FromStr;

/// One environment variable a binary reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvVar {
    pub name: &'static str,
    /// What a valid value looks like, for people: "a number of seconds from 0 to 20".
    pub expected: &'static str,
    /// `None` means the variable is required.
    pub default: Option<&'static str>,
}

impl EnvVar {
    pub const fn required(name: &'static str, expected: &'static str) -> Self {
        Self { name, expected, default: None }
    }

    pub const fn optional(name: &'static str, expected: &'static str, default: &'static str) -> Self {
        Self { name, expected, default: Some(default) }
    }

    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }
}

/// A setting that is missing or does not hold what it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {name} {problem}; expected {expected}")]
pub struct ConfigError {
    pub name: &'static str,
    pub expected: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub fn invalid(var: &EnvVar, problem: impl Into<String>) -> Self {
        Self { name: var.name, expected: var.expected, problem: problem.into() }
    }
}

/// Reads settings from a lookup function: the process environment in binaries, a map in tests.
pub struct Environment<F> {
    lookup: F,
}

/// An environment of the given pairs and nothing else (tests, examples).
pub fn environment_of(pairs: &[(&str, &str)]) -> Environment<impl Fn(&str) -> Option<String>> {
    let map: std::collections::HashMap<String, String> =
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Environment::from_fn(move |name: &str| map.get(name).cloned())
}

/// The format predictions are written in, read by the trigger (a Parquet output is not split
/// into shards) and the worker alike.
pub const OUTPUT_FORMAT: EnvVar = EnvVar::optional(
    "OUTPUT_FORMAT",
    "the format predictions are written in: input (the input's own), csv, jsonl or parquet",
    "input",
);

/// `OUTPUT_FORMAT`'s choice: `csv`, `jsonl` or `parquet`, or `None` for the input's own format.
pub fn output_format<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<Option<&'static str>, ConfigError> {
    let text = env.string(&OUTPUT_FORMAT)?;
    match text.as_str() {
        "input" => Ok(None),
        "csv" => Ok(Some("csv")),
        "jsonl" => Ok(Some("jsonl")),
        "parquet" => Ok(Some("parquet")),
        _ => Err(ConfigError::invalid(&OUTPUT_FORMAT, format!("is {text:?}"))),
    }
}

/// The process environment.
pub fn process_environment() -> Environment<impl Fn(&str) -> Option<String>> {
    Environment::from_fn(|name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
}

impl<F: Fn(&str) -> Option<String>> Environment<F> {
    pub fn from_fn(lookup: F) -> Self {
        Self { lookup }
    }

    /// The value, or the default; an empty value counts as unset.
    pub fn string(&self, var: &EnvVar) -> Result<String, ConfigError> {
        match (self.lookup)(var.name).filter(|v| !v.trim().is_empty()) {
            Some(value) => Ok(value.trim().to_owned()),
            None => var.default.map(str::to_owned).ok_or_else(|| ConfigError::invalid(var, "is not set")),
        }
    }

    /// The value parsed as `T`.
    pub fn parse<T>(&self, var: &EnvVar) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let raw = self.string(var)?;
        raw.parse().map_err(|e| ConfigError::invalid(var, format!("is {raw:?} ({e})")))
    }

    /// The value parsed as `T` and checked to lie in `range`.
    pub fn parse_in<T>(&self, var: &EnvVar, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display,
        T::Err: Display,
    {
        let value: T = self.parse(var)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::invalid(var, format!("is {value}, outside {}..={}", range.start(), range.end())))
        }
    }

    /// A comma-separated list; blanks between commas are ignored.
    pub fn list(&self, var: &EnvVar) -> Result<Vec<String>, ConfigError> {
        Ok(self.string(var)?.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect())
    }
}

#[cfg(test)]
pub(crate) fn map_environment(pairs: &[(&str, &str)]) -> Environment<impl Fn(&str) -> Option<String>> {
    let map: std::collections::HashMap<String, String> =
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Environment::from_fn(move |name: &str| map.get(name).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUEUE: EnvVar = EnvVar::required("QUEUE_URL", "the URL of the job queue");
    const WAIT: EnvVar = EnvVar::optional("POLL_WAIT_SECONDS", "a number of seconds from 0 to 20", "20");
    const SUBNETS: EnvVar = EnvVar::optional("WORKER_SUBNETS", "comma-separated subnet ids", "");

    #[test]
    fn missing_required_variable_names_itself() {
        let err = map_environment(&[]).string(&QUEUE).unwrap_err();
        assert_eq!(err.to_string(), "environment variable QUEUE_URL is not set; expected the URL of the job queue");
    }

    #[test]
    fn empty_counts_as_unset() {
        assert!(map_environment(&[("QUEUE_URL", "  ")]).string(&QUEUE).is_err());
        assert_eq!(map_environment(&[("POLL_WAIT_SECONDS", "")]).parse::<u32>(&WAIT).unwrap(), 20);
    }

    #[test]
    fn parses_and_checks_ranges() {
        let env = map_environment(&[("POLL_WAIT_SECONDS", "5")]);
        assert_eq!(env.parse_in(&WAIT, 0..=20u32).unwrap(), 5);
        let env = map_environment(&[("POLL_WAIT_SECONDS", "25")]);
        let err = env.parse_in(&WAIT, 0..=20u32).unwrap_err();
        assert!(err.to_string().contains("POLL_WAIT_SECONDS is 25, outside 0..=20"), "{err}");
        let env = map_environment(&[("POLL_WAIT_SECONDS", "soon")]);
        let err = env.parse::<u32>(&WAIT).unwrap_err();
        assert!(err.to_string().contains("POLL_WAIT_SECONDS is \"soon\""), "{err}");
    }

    #[test]
    fn lists_split_on_commas() {
        let env = map_environment(&[("WORKER_SUBNETS", "subnet-1, subnet-2,,")]);
        assert_eq!(env.list(&SUBNETS).unwrap(), vec!["subnet-1", "subnet-2"]);
        assert!(map_environment(&[]).list(&SUBNETS).unwrap().is_empty());
    }
}
