//! Metrics as CloudWatch embedded-metric-format (EMF) records: one JSON object per line on
//! standard output, which CloudWatch Logs turns into metrics as it ingests the log stream. No API
//! call and no permission beyond writing logs; the record's other fields (the input, the worker
//! id) stay searchable in Logs Insights.
//!
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::io::Write;

use serde_json::{Map, Value, json};

/// The namespace when none is configured.
pub const DEFAULT_NAMESPACE: &str = "sluice";

/// A metric's unit, as CloudWatch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Seconds,
    CountPerSecond,
    Bytes,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
            Unit::CountPerSecond => "Count/Second",
            Unit::Bytes => "Bytes",
        }
    }
}

/// One EMF record: metrics with values, and properties that are logged but not metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecord {
    namespace: String,
    timestamp_ms: i64,
    metrics: Vec<(String, Unit, f64)>,
    properties: Map<String, Value>,
}

impl MetricRecord {
    /// A record in `namespace`, stamped now. The metrics carry no dimension: each is one series
    /// per namespace, which is what the deployment's dashboard plots.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            timestamp_ms: chrono::Utc::now().timestamp_millis(),
            metrics: Vec::new(),
            properties: Map::new(),
        }
    }

    pub fn metric(mut self, name: &str, unit: Unit, value: f64) -> Self {
        // CloudWatch rejects non-finite values; such a value is dropped rather than the record.
        if value.is_finite() {
            self.metrics.push((name.to_owned(), unit, value));
        }
        self
    }

    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    /// The record as CloudWatch reads it.
    pub fn to_json(&self) -> Value {
        let definitions: Vec<Value> =
            self.metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit.name()})).collect();
        let mut object = Map::new();
        object.insert(
            "_aws".into(),
            json!({
                "Timestamp": self.timestamp_ms,
                "CloudWatchMetrics": [{"Namespace": self.namespace, "Dimensions": [[]], "Metrics": definitions}],
            }),
        );
        for (name, value) in &self.properties {
            object.insert(name.clone(), value.clone());
        }
        for (name, _, value) in &self.metrics {
            object.insert(name.clone(), json!(value));
        }
        Value::Object(object)
    }

    /// Writes the record as one line on standard output.
    pub fn emit(&self) {
        let line = format!("{}\n", self.to_json());
        let mut stdout = std::io::stdout().lock();
        // A closed standard output must not stop the program: the metric is lost, nothing else.
        let _ = stdout.write_all(line.as_bytes()).and_then(|()| stdout.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_emf_with_its_metrics_declared_and_valued() {
        // GIVEN a record with two metrics and a property
        let record = MetricRecord::new("sluice/prod")
            .metric("RowsIn", Unit::Count, 150.0)
            .metric("Seconds", Unit::Seconds, 0.25)
            .metric("RowsPerSecond", Unit::CountPerSecond, f64::INFINITY)
            .property("input", "s3://in/a.csv");
        // WHEN it is serialised
        let value = record.to_json();
        // THEN the _aws block declares exactly the finite metrics, and each has its value
        let directive = &value["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "sluice/prod");
        assert_eq!(directive["Dimensions"], json!([[]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "RowsIn", "Unit": "Count"}, {"Name": "Seconds", "Unit": "Seconds"}])
        );
        assert_eq!(value["RowsIn"], 150.0);
        assert_eq!(value["Seconds"], 0.25);
        assert!(value.get("RowsPerSecond").is_none());
        assert_eq!(value["input"], "s3://in/a.csv");
        assert!(value["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    }
}
