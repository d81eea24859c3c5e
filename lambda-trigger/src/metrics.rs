//! What one invocation did, as an embedded-metric-format record (see [`shared::metrics`]): jobs
//! enqueued and on the queue, workers seen and started, and starts that failed or were held back.

use shared::metrics::{MetricRecord, Unit};

use crate::{InvocationSummary, TriggerError};

/// Every metric the trigger writes (the template's dashboard may plot only these).
pub const NAMES: &[&str] = &[
    "JobsEnqueued",
    "MessagesEnqueued",
    "BadRecords",
    "JobsWaiting",
    "JobsInHand",
    "WorkersActive",
    "WorkersStarted",
    "WorkerStartFailures",
    "WorkerStartsHeldBack",
    "TriggerErrors",
];

/// The record of one invocation's result; `None` for a reconciliation that found nothing to do,
/// so that an idle deployment publishes no metric (CloudWatch bills custom metrics by the hours
/// they have data in).
pub fn invocation_record(namespace: &str, result: &Result<InvocationSummary, TriggerError>) -> Option<MetricRecord> {
    let record = MetricRecord::new(namespace);
    Some(match result {
        Ok(summary) if is_idle(summary) => return None,
        Ok(summary) => record
            .metric("JobsEnqueued", Unit::Count, summary.jobs.len() as f64)
            .metric("MessagesEnqueued", Unit::Count, summary.messages as f64)
            .metric("BadRecords", Unit::Count, summary.bad_records.len() as f64)
            .metric("JobsWaiting", Unit::Count, summary.workers.backlog.waiting as f64)
            .metric("JobsInHand", Unit::Count, summary.workers.backlog.in_hand as f64)
            .metric("WorkersActive", Unit::Count, summary.workers.active as f64)
            .metric("WorkersStarted", Unit::Count, summary.workers.started.len() as f64)
            .metric("WorkerStartFailures", Unit::Count, f64::from(u8::from(summary.worker_start_error.is_some())))
            .metric("WorkerStartsHeldBack", Unit::Count, f64::from(u8::from(summary.workers.backing_off.is_some()))),
        Err(error) => record.metric("TriggerErrors", Unit::Count, 1.0).property("error", error.to_string()),
    })
}

fn is_idle(summary: &InvocationSummary) -> bool {
    summary.jobs.is_empty()
        && summary.bad_records.is_empty()
        && summary.workers.backlog.total() == 0
        && summary.workers.active == 0
        && summary.worker_start_error.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_reconciliation_writes_no_metric() {
        assert_eq!(invocation_record("sluice", &Ok(InvocationSummary::default())), None);
    }

    #[test]
    fn every_metric_written_is_declared() {
        let mut busy = InvocationSummary::default();
        busy.jobs.push("s3://in/a.csv".into());
        let ok = invocation_record("sluice", &Ok(busy)).unwrap().to_json();
        let err = invocation_record("sluice", &Err(TriggerError::UnrecognisedEvent("x".into()))).unwrap().to_json();
        for record in [ok, err] {
            for metric in record["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
                assert!(NAMES.contains(&metric["Name"].as_str().unwrap()), "{metric}");
            }
        }
    }
}
