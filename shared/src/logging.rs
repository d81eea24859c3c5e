//! Log set-up shared by the binaries: readable text on a terminal, and off a terminal (CloudWatch
//! Logs, a pipe) one JSON object per event, with the fields of the spans it happens in (the worker
//! id, the input, the attempt) flattened beside its own, so that Logs Insights can filter on them:
//! `{"timestamp": "...", "level": "INFO", "message": "job started", "input": "s3://...", "attempt": 1}`.
//!
//! `RUST_LOG` filters (default `info`).

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text for people, in colour.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// JSON unless standard error is a terminal.
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() { LogFormat::Text } else { LogFormat::Json }
    }
}

/// Installs the global subscriber, writing to standard error. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.fmt_fields(JsonFields::new()).event_format(FlatJson).init(),
    }
}

/// Formats an event as one JSON object: time, level, target, the fields of its spans from the
/// outermost in, then its own fields (`message` among them). Later fields win on equal names.
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let metadata = event.metadata();
        let mut object = Map::new();
        object
            .insert("timestamp".into(), chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into());
        object.insert("level".into(), metadata.level().as_str().into());
        object.insert("target".into(), metadata.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // With JsonFields, a span's recorded fields are kept as a JSON object's text.
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&fields.fields)
                {
                    object.extend(fields);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut object));
        writeln!(writer, "{}", Value::Object(object))
    }
}

/// Collects an event's fields into a JSON object, numbers and booleans as such.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), crate::aws_error::error_chain(value).into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn events_are_json_lines_with_the_fields_of_their_spans() {
        // GIVEN the JSON format writing into a buffer
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        // WHEN an event happens inside a worker span and a job span
        tracing::subscriber::with_default(subscriber, || {
            let worker = tracing::info_span!("worker", worker_id = "w-1");
            let _worker = worker.enter();
            let job = tracing::info_span!("job", input = "s3://in/a.csv", attempt = 2u32);
            let _job = job.enter();
            tracing::info!(rows = 150u64, ok = true, ratio = 0.5, "job succeeded");
            tracing::warn!(error = %"S3 GetObject failed: SlowDown", "retrying");
        });
        // THEN each line is one object with the span fields flattened beside the event's
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        assert_eq!(first["message"], "job succeeded");
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["worker_id"], "w-1");
        assert_eq!(first["input"], "s3://in/a.csv");
        assert_eq!(first["attempt"], 2);
        assert_eq!(first["rows"], 150);
        assert_eq!(first["ok"], true);
        assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["error"], "S3 GetObject failed: SlowDown");
        assert!(!text.contains('\u{1b}'), "no colour codes");
    }
}
