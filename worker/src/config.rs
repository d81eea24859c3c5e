//! The worker's settings, from the task's environment.

use std::time::Duration;

use shared::config::{ConfigError, EnvVar, Environment};

use crate::engine::{CsvOptions, TableFormat, TransformOptions, default_threads};

pub const QUEUE_URL: EnvVar = EnvVar::required("QUEUE_URL", "the URL of the job queue");
pub const POLL_WAIT_SECONDS: EnvVar =
    EnvVar::optional("POLL_WAIT_SECONDS", "seconds each receive waits for messages, from 0 to 20", "20");
pub const EMPTY_POLLS_BEFORE_EXIT: EnvVar =
    EnvVar::optional("EMPTY_POLLS_BEFORE_EXIT", "how many empty receives in a row end the worker, from 1 to 1000", "3");
pub const BATCH_SIZE: EnvVar = EnvVar::optional("BATCH_SIZE", "rows per model run, from 1 to 1048576", "4096");
pub const MAX_BAD_ROW_RATIO: EnvVar =
    EnvVar::optional("MAX_BAD_ROW_RATIO", "the share of bad rows above which a file fails, from 0 to 1", "0.1");
pub const VISIBILITY_TIMEOUT_SECONDS: EnvVar = EnvVar::optional(
    "VISIBILITY_TIMEOUT_SECONDS",
    "seconds each heartbeat hides the message in hand, from 2 to 43200",
    "300",
);
pub const SHUTDOWN_GRACE_SECONDS: EnvVar = EnvVar::optional(
    "SHUTDOWN_GRACE_SECONDS",
    "seconds to finish the job in hand after SIGTERM, from 0 to 600 (below the task's stop timeout)",
    "25",
);
pub const INFERENCE_THREADS: EnvVar =
    EnvVar::optional("INFERENCE_THREADS", "threads running the model, from 1 to 256, or 0 for one per core", "0");
pub const CSV_HAS_HEADER: EnvVar =
    EnvVar::optional("CSV_HAS_HEADER", "true if CSV files start with a header row, false if not", "true");
pub const CSV_DELIMITER: EnvVar =
    EnvVar::optional("CSV_DELIMITER", "the delimiter of .csv files: one ASCII character, or tab", ",");
pub const MAX_INPUT_BYTES: EnvVar =
    EnvVar::optional("MAX_INPUT_BYTES", "the largest input file in bytes; larger ones fail", "107374182400");

pub use shared::config::OUTPUT_FORMAT;
pub const PARQUET_ROW_GROUP_ROWS: EnvVar =
    EnvVar::optional("PARQUET_ROW_GROUP_ROWS", "rows per row group of Parquet outputs, from 1 to 67108864", "262144");

pub const MAX_IMAGE_PIXELS: EnvVar = EnvVar::optional(
    "MAX_IMAGE_PIXELS",
    "the most pixels an image may have (width x height); larger ones are refused before decoding",
    "50000000",
);

pub const RETRY_DELAY_SECONDS: EnvVar = EnvVar::optional(
    "RETRY_DELAY_SECONDS",
    "seconds before a job that failed for a passing reason is tried again, doubling with each try, from 0 to 900",
    "10",
);
pub const METRICS_NAMESPACE: EnvVar = EnvVar::optional(
    "METRICS_NAMESPACE",
    "the CloudWatch namespace of the metrics written to the log (embedded metric format)",
    shared::metrics::DEFAULT_NAMESPACE,
);
pub const COMPLETION_EVENTS: EnvVar = EnvVar::optional(
    "COMPLETION_EVENTS",
    "true to put an EventBridge event on the default bus for every finished file, false not to",
    "true",
);

pub const MODEL_CACHE_BYTES: EnvVar = EnvVar::optional(
    "MODEL_CACHE_BYTES",
    "bytes of memory for loaded models (each counted as twice its file), least recently used out first; 0 for a quarter of the task's memory",
    "0",
);

/// Every variable the worker reads.
pub const VARS: &[EnvVar] = &[
    QUEUE_URL,
    POLL_WAIT_SECONDS,
    EMPTY_POLLS_BEFORE_EXIT,
    BATCH_SIZE,
    MAX_BAD_ROW_RATIO,
    VISIBILITY_TIMEOUT_SECONDS,
    SHUTDOWN_GRACE_SECONDS,
    INFERENCE_THREADS,
    CSV_HAS_HEADER,
    CSV_DELIMITER,
    MAX_INPUT_BYTES,
    OUTPUT_FORMAT,
    PARQUET_ROW_GROUP_ROWS,
    MAX_IMAGE_PIXELS,
    RETRY_DELAY_SECONDS,
    METRICS_NAMESPACE,
    COMPLETION_EVENTS,
    MODEL_CACHE_BYTES,
];

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    pub queue_url: String,
    pub poll_wait: Duration,
    pub empty_polls_before_exit: u32,
    pub visibility_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_input_bytes: u64,
    /// The pause before the first retry of a job handed back; it doubles with each attempt.
    pub retry_delay: Duration,
    pub transform: TransformOptions,
    pub csv: CsvOptions,
    pub metrics_namespace: String,
    pub completion_events: bool,
    /// The memory budget of the model cache.
    pub model_cache_bytes: u64,
}

impl WorkerConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<Self, ConfigError> {
        Ok(Self {
            queue_url: env.string(&QUEUE_URL)?,
            poll_wait: Duration::from_secs(env.parse_in(&POLL_WAIT_SECONDS, 0..=20)?),
            empty_polls_before_exit: env.parse_in(&EMPTY_POLLS_BEFORE_EXIT, 1..=1000)?,
            visibility_timeout: Duration::from_secs(env.parse_in(&VISIBILITY_TIMEOUT_SECONDS, 2..=43_200)?),
            shutdown_grace: Duration::from_secs(env.parse_in(&SHUTDOWN_GRACE_SECONDS, 0..=600)?),
            max_input_bytes: env.parse_in(&MAX_INPUT_BYTES, 1..=u64::MAX)?,
            retry_delay: Duration::from_secs(env.parse_in(&RETRY_DELAY_SECONDS, 0..=900)?),
            transform: transform_options(env)?,
            csv: csv_options(env)?,
            metrics_namespace: env.string(&METRICS_NAMESPACE)?,
            completion_events: env.parse(&COMPLETION_EVENTS)?,
            model_cache_bytes: match env.parse::<u64>(&MODEL_CACHE_BYTES)? {
                0 => default_model_cache_bytes(),
                bytes => bytes,
            },
        })
    }
}

/// A quarter of the memory this process may use (the task's, through its cgroup), or 512 MiB
/// where no limit is set.
pub fn default_model_cache_bytes() -> u64 {
    const FALLBACK: u64 = 512 << 20;
    let read = |path: &str| std::fs::read_to_string(path).ok().and_then(|text| text.trim().parse::<u64>().ok());
    // cgroup v2 (Fargate, recent Docker), then v1; v1 reports "no limit" as a huge number.
    let limit = read("/sys/fs/cgroup/memory.max").or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
    match limit {
        Some(limit) if limit < 1 << 50 => limit / 4,
        _ => FALLBACK,
    }
}

/// The settings of the transform itself, shared by queue mode and `worker transform`.
pub fn transform_options<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<TransformOptions, ConfigError> {
    let threads = match env.parse_in(&INFERENCE_THREADS, 0..=256)? {
        0 => default_threads(),
        n => n,
    };
    Ok(TransformOptions {
        batch_size: env.parse_in(&BATCH_SIZE, 1..=1 << 20)?,
        max_bad_row_ratio: env.parse_in(&MAX_BAD_ROW_RATIO, 0.0..=1.0)?,
        threads,
        max_image_pixels: env.parse_in(&MAX_IMAGE_PIXELS, 1..=u64::MAX)?,
        output_format: output_format(env)?,
        row_group_rows: env.parse_in(&PARQUET_ROW_GROUP_ROWS, 1..=1 << 26)?,
    })
}

/// `OUTPUT_FORMAT`: `None` for `input`, the input's own format.
pub fn output_format<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<Option<TableFormat>, ConfigError> {
    Ok(shared::config::output_format(env)?.and_then(TableFormat::parse))
}

/// How CSV files are read, shared by queue mode and `worker transform`.
pub fn csv_options<F: Fn(&str) -> Option<String>>(env: &Environment<F>) -> Result<CsvOptions, ConfigError> {
    let has_header = env.parse(&CSV_HAS_HEADER)?;
    let delimiter = env.string(&CSV_DELIMITER)?;
    let delimiter =
        parse_delimiter(&delimiter).ok_or_else(|| ConfigError::invalid(&CSV_DELIMITER, format!("is {delimiter:?}")))?;
    Ok(CsvOptions { has_header, delimiter })
}

/// One ASCII character, or the word `tab`.
pub fn parse_delimiter(text: &str) -> Option<u8> {
    match text {
        "tab" | "\\t" | "\t" => Some(b'\t'),
        _ if text.len() == 1 && text.is_ascii() && text != "\"" && text != "\n" => Some(text.as_bytes()[0]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::environment_of as env;

    #[test]
    fn defaults_fill_everything_but_the_queue() {
        let config = WorkerConfig::from_env(&env(&[("QUEUE_URL", "q")])).unwrap();
        assert_eq!(config.poll_wait, Duration::from_secs(20));
        assert_eq!(config.empty_polls_before_exit, 3);
        assert_eq!(
            config.transform,
            TransformOptions {
                batch_size: 4096,
                max_bad_row_ratio: 0.1,
                threads: default_threads(),
                max_image_pixels: 50_000_000,
                output_format: None,
                row_group_rows: 262_144,
            }
        );
        assert_eq!(config.csv, CsvOptions { has_header: true, delimiter: b',' });
        assert_eq!(config.retry_delay, Duration::from_secs(10));
        assert_eq!(config.metrics_namespace, "sluice");
        assert!(config.completion_events);
        assert_eq!(config.model_cache_bytes, default_model_cache_bytes());
        assert!(config.model_cache_bytes > 0);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("POLL_WAIT_SECONDS", "21"),
            ("EMPTY_POLLS_BEFORE_EXIT", "0"),
            ("BATCH_SIZE", "lots"),
            ("MAX_BAD_ROW_RATIO", "1.5"),
            ("VISIBILITY_TIMEOUT_SECONDS", "1"),
            ("SHUTDOWN_GRACE_SECONDS", "-1"),
            ("INFERENCE_THREADS", "1000"),
            ("CSV_HAS_HEADER", "yes"),
            ("CSV_DELIMITER", ";;"),
            ("RETRY_DELAY_SECONDS", "901"),
            ("COMPLETION_EVENTS", "yes"),
            ("MAX_IMAGE_PIXELS", "0"),
            ("OUTPUT_FORMAT", "xlsx"),
            ("PARQUET_ROW_GROUP_ROWS", "0"),
        ] {
            let err = WorkerConfig::from_env(&env(&[("QUEUE_URL", "q"), (name, value)])).unwrap_err();
            assert_eq!(err.name, name, "{err}");
        }
        assert_eq!(WorkerConfig::from_env(&env(&[])).unwrap_err().name, "QUEUE_URL");
    }

    #[test]
    fn output_format_is_the_inputs_unless_chosen() {
        let options = |value| transform_options(&env(&[("OUTPUT_FORMAT", value)])).unwrap().output_format;
        assert_eq!(options("input"), None);
        assert_eq!(options("parquet"), Some(TableFormat::Parquet));
        assert_eq!(options("csv"), Some(TableFormat::Csv));
        assert_eq!(options("jsonl"), Some(TableFormat::JsonLines));
    }

    #[test]
    fn delimiters_are_one_character_or_tab() {
        assert_eq!(parse_delimiter(";"), Some(b';'));
        assert_eq!(parse_delimiter("tab"), Some(b'\t'));
        assert_eq!(parse_delimiter("|"), Some(b'|'));
        assert_eq!(parse_delimiter(""), None);
        assert_eq!(parse_delimiter("é"), None);
    }
}
