//! The server's budget of bytes in flight: what its requests hold at once (bodies read, their
//! rows as the model's input, the model's outputs and the answers being written), so memory does
//! not grow with load. A request takes its share before it holds it, for its body as soon as its
//! headers say the length, for its tensors and answer once its rows are counted; what does not
//! fit is refused at once with 503 and `Retry-After` (as a full queue is), and what could never
//! fit, not even alone, with 413. The share is given back when the answer has been sent.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ServeError;

/// The budget is counted in KiB: a semaphore's permits are counted in `u32`.
const UNIT: usize = 1024;

/// The server-wide budget.
#[derive(Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    bytes: usize,
    in_flight: Gauge,
}

/// A request's share of the budget, given back when dropped.
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    in_flight: Gauge,
}

impl Budget {
    pub fn new(bytes: usize, in_flight: Gauge) -> Self {
        let units = bytes.div_ceil(UNIT).min(u32::MAX as usize);
        Self { units: Arc::new(Semaphore::new(units)), bytes, in_flight }
    }

    /// The budget in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Nothing held yet: a share to grow.
    pub fn empty(&self) -> Held {
        Held { permit: None, in_flight: self.in_flight.clone() }
    }

    /// Bytes held by requests now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.get().max(0) as usize
    }

    /// `bytes` more for `held`, at once or not at all.
    pub fn grow(&self, held: &mut Held, bytes: usize) -> Result<(), ServeError> {
        let units = bytes.div_ceil(UNIT);
        let permit_units = held.permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
        if (units + permit_units) * UNIT > self.bytes {
            return Err(ServeError::OverBudget { needed: (units + permit_units) * UNIT, budget: self.bytes });
        }
        if units == 0 {
            return Ok(());
        }
        let permit = Arc::clone(&self.units).try_acquire_many_owned(units as u32).map_err(|_| {
            ServeError::Overloaded(format!(
                "the server holds {} MB of requests in flight, its budget (MAX_BYTES_IN_FLIGHT) is {} MB: try again shortly",
                self.in_flight() / 1_000_000,
                self.bytes / 1_000_000
            ))
        })?;
        self.in_flight.inc_by((units * UNIT) as i64);
        match &mut held.permit {
            Some(existing) => existing.merge(permit),
            None => held.permit = Some(permit),
        }
        Ok(())
    }
}

impl Held {
    /// Gives back what is held beyond `bytes` (a body shorter than the share taken for it).
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(UNIT);
        if let Some(permit) = &mut self.permit
            && permit.num_permits() > keep
            && let Some(extra) = permit.split(permit.num_permits() - keep)
        {
            self.in_flight.dec_by((extra.num_permits() * UNIT) as i64);
        }
    }

    /// The response, holding this share until its body has been sent.
    pub fn until_sent(self, response: Response) -> Response {
        response.map(|body| Body::new(Holding { body, _held: self }))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.in_flight.dec_by((permit.num_permits() * UNIT) as i64);
        }
    }
}

/// A response body that keeps its request's share until it has been written out.
struct Holding {
    body: Body,
    _held: Held,
}

impl http_body::Body for Holding {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_taken_whole_or_refused_and_given_back_on_drop() {
        let budget = Budget::new(10 * UNIT, Gauge::default());
        let mut first = budget.empty();
        budget.grow(&mut first, 6 * UNIT).unwrap();
        let mut second = budget.empty();
        assert!(matches!(budget.grow(&mut second, 5 * UNIT), Err(ServeError::Overloaded(_))));
        assert_eq!(budget.in_flight(), 6 * UNIT, "a refused share takes nothing");
        budget.grow(&mut second, 4 * UNIT).unwrap();
        assert!(matches!(budget.grow(&mut second, 7 * UNIT), Err(ServeError::OverBudget { .. })));
        first.shrink_to(UNIT + 1);
        assert_eq!(budget.in_flight(), 6 * UNIT);
        drop(first);
        drop(second);
        assert_eq!(budget.in_flight(), 0);
        assert_eq!(budget.units.available_permits(), 10);
    }
}
