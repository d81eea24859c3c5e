//! The server's metrics, in the Prometheus / OpenMetrics text format at `GET /metrics`:
//! requests by model, protocol and status code, errors, request latency, and the rows and
//! requests of each batch, per model.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::batcher::BatchObserver;
use super::error::Protocol;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    protocol: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoadLabels {
    model: String,
    version: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    protocol: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchLabels {
    model: String,
    version: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    errors: Family<ModelLabels, Counter>,
    latency: Histograms<ModelLabels>,
    batch_rows: Histograms<BatchLabels>,
    batch_requests: Histograms<BatchLabels>,
    bytes_in_flight: Gauge,
    model_loads: Family<LoadLabels, Counter>,
    unauthorized: Family<RefusedLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to about 3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn count_histogram() -> Histogram {
    // 1 to 4096.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::<RequestLabels, Counter>::default();
        let errors = Family::<ModelLabels, Counter>::default();
        let latency: Histograms<ModelLabels> = Family::new_with_constructor(latency_histogram);
        let batch_rows: Histograms<BatchLabels> = Family::new_with_constructor(count_histogram);
        let batch_requests: Histograms<BatchLabels> = Family::new_with_constructor(count_histogram);
        registry.register(
            "requests",
            "Inference and status requests, by model, protocol and status code",
            requests.clone(),
        );
        registry.register(
            "request_errors",
            "Requests answered with an error status, by model and protocol",
            errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request, by model and protocol",
            latency.clone(),
        );
        registry.register("batch_rows", "Rows in each model run, by model and version", batch_rows.clone());
        registry.register(
            "batch_requests",
            "Requests batched into each model run, by model and version",
            batch_requests.clone(),
        );
        let bytes_in_flight = Gauge::default();
        registry.register(
            "bytes_in_flight",
            "Bytes requests hold now (bodies, their rows, outputs and answers), of the budget MAX_BYTES_IN_FLIGHT",
            bytes_in_flight.clone(),
        );
        let model_loads = Family::<LoadLabels, Counter>::default();
        registry.register(
            "model_loads",
            "Model versions loaded (outcome ok) or that could not be (failed), by model and version",
            model_loads.clone(),
        );
        let unauthorized = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "unauthorized_requests",
            "Requests refused for want of a valid API key (no_key, wrong_key) or for the repository API being off, by protocol",
            unauthorized.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            errors,
            latency,
            batch_rows,
            batch_requests,
            bytes_in_flight,
            model_loads,
            unauthorized,
        })
    }

    /// Counts one answered request. `model` is empty where the request named none.
    pub fn request(&self, protocol: Protocol, model: &str, status: u16, elapsed: Duration) {
        let protocol = protocol.label().to_owned();
        let code = status.to_string();
        self.requests.get_or_create(&RequestLabels { model: model.to_owned(), protocol: protocol.clone(), code }).inc();
        let labels = ModelLabels { model: model.to_owned(), protocol };
        if status >= 400 {
            self.errors.get_or_create(&labels).inc();
        }
        self.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// The gauge of the server's budget.
    /// Counts a request refused by [`super::auth`].
    pub fn unauthorized(&self, protocol: Protocol, reason: &str) {
        self.unauthorized
            .get_or_create(&RefusedLabels { protocol: protocol.label().to_owned(), reason: reason.to_owned() })
            .inc();
    }

    pub fn bytes_in_flight(&self) -> Gauge {
        self.bytes_in_flight.clone()
    }

    /// What a model's batcher reports its batches to.
    pub fn batch_observer(self: &Arc<Self>, model: &str, version: u64) -> Arc<dyn BatchObserver> {
        Arc::new(ModelBatches {
            metrics: Arc::clone(self),
            labels: BatchLabels { model: model.to_owned(), version: version.to_string() },
        })
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

impl super::registry::RegistryObserver for Arc<Metrics> {
    fn batches(&self, name: &str, version: u64) -> Arc<dyn BatchObserver> {
        self.batch_observer(name, version)
    }

    fn loaded(&self, name: &str, version: u64, outcome: Result<(), &str>) {
        let outcome = if outcome.is_ok() { "ok" } else { "failed" };
        let labels = LoadLabels { model: name.to_owned(), version: version.to_string(), outcome: outcome.to_owned() };
        self.model_loads.get_or_create(&labels).inc();
    }
}

struct ModelBatches {
    metrics: Arc<Metrics>,
    labels: BatchLabels,
}

impl BatchObserver for ModelBatches {
    fn batch_ran(&self, requests: usize, rows: usize) {
        self.metrics.batch_rows.get_or_create(&self.labels).observe(rows as f64);
        self.metrics.batch_requests.get_or_create(&self.labels).observe(requests as f64);
    }
}
