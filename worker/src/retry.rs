//! Retrying calls that failed for a reason that may pass (throttling, a server error, a network
//! that froze for a while), with exponential backoff. The SDK retries each call a few times
//! within a few seconds; this covers outages of up to a minute or so on top, so that a brief
//! outage costs a pause rather than the whole job.

use std::future::Future;
use std::time::Duration;

use shared::aws_error::AwsError;

/// How often and how patiently to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The pause after the first failure; it doubles after each further one.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Backoff {
    /// For storage and queue calls: 7 tries over about a minute (0.5, 1, 2, 4, 8, 16 s apart
    /// plus the calls' own time).
    pub const CALLS: Backoff = Backoff { attempts: 7, first: Duration::from_millis(500), max: Duration::from_secs(16) };

    /// The pause after failure number `failure` (1-based).
    pub fn delay(&self, failure: u32) -> Duration {
        let doublings = failure.saturating_sub(1).min(20);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

/// Runs `call` until it succeeds, fails for good, or has been tried `policy.attempts` times.
pub async fn retry<T, F, Fut>(policy: &Backoff, mut call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let mut failures = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) if error.is_retryable() && failures + 1 < policy.attempts => {
                failures += 1;
                let pause = policy.delay(failures);
                tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, failures, "retrying a failed call");
                tokio::time::sleep(pause).await;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn pauses_double_up_to_the_maximum() {
        let policy = Backoff { attempts: 10, first: Duration::from_secs(1), max: Duration::from_secs(5) };
        let pauses: Vec<u64> = (1..=5).map(|n| policy.delay(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 5, 5]);
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_errors_are_retried_and_others_are_not() {
        let calls = AtomicU32::new(0);
        let slow_down = || AwsError::service("S3", "UploadPart", "SlowDown", "reduce your request rate", 503);
        // Two throttled answers, then success.
        let result = retry(&Backoff::CALLS, || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(slow_down()) } else { Ok(7) }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Always throttled: gives up after the last attempt.
        calls.store(0, Ordering::SeqCst);
        let result: Result<(), _> = retry(&Backoff::CALLS, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(slow_down())
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), Backoff::CALLS.attempts);
        // Access denied: not retried.
        calls.store(0, Ordering::SeqCst);
        let result: Result<(), _> = retry(&Backoff::CALLS, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(AwsError::service("S3", "GetObject", "AccessDenied", "Access Denied", 403))
        })
        .await;
        assert!(result.unwrap_err().is_access_denied());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
