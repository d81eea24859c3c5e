//! Dynamic batching: concurrent requests for one model run together, as Triton's dynamic
//! batcher runs them. A request joins the batch being gathered. The batch runs on the blocking
//! thread pool (never on the async executor's threads), at most `parallel` batches of a model at
//! once: as soon as a run is free, or once it holds `max_batch_rows` rows. While every run is
//! busy, requests that arrive join the waiting batch, so under load batches grow by themselves
//! and an idle model answers a lone request at once. `max_delay` (0 by default, as Triton's
//! `max_queue_delay_microseconds`) also holds a batch back that long for company when a run is
//! free. The queue of waiting requests is bounded: when it is full a request is refused at once
//! (the server answers 503 with `Retry-After`).
//!
//! Each request's rows start at a multiple of [`RUN_ROW_MULTIPLE`] within the batch, where they
//! would be in a run of their own (see that constant): results are identical to one-by-one runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::engine::batch::Batch;
use crate::engine::model::RUN_ROW_MULTIPLE;
use crate::engine::{Model, OutputValues};
use crate::models::LoadedModel;

/// How requests are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// The most rows one model run takes (a larger request runs alone).
    pub max_batch_rows: usize,
    /// How long the first request of a batch waits for others while a run is free.
    pub max_delay: Duration,
    /// Requests waiting for a model, at most; more are refused.
    pub queue_capacity: usize,
    /// Batches of one model running at once.
    pub parallel: usize,
    /// The tokens a text model's requests may hold at once (TEI's `max-batch-tokens`): the
    /// model's memory grows with its tokens, not with its rows.
    pub max_batch_tokens: usize,
}

/// Why a request got no predictions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    #[error("the model's queue is full ({0} requests waiting): try again shortly")]
    Overloaded(usize),
    #[error("the model failed: {0}")]
    Model(String),
    #[error("the server is stopping")]
    Stopped,
    #[error("the texts in flight hold {held} of the model's {limit} tokens (MAX_BATCH_TOKENS): try again shortly")]
    TokensBusy { held: usize, limit: usize },
    #[error(
        "the request's texts may take {tokens} tokens, more than the {limit} the model runs at once (MAX_BATCH_TOKENS): send fewer or shorter texts"
    )]
    TooManyTokens { tokens: usize, limit: usize },
}

/// What the batcher reports of each batch it runs.
pub trait BatchObserver: Send + Sync + 'static {
    fn batch_ran(&self, requests: usize, rows: usize);
}

/// The batching front of one loaded model.
#[derive(Clone)]
pub struct Batcher {
    requests: mpsc::Sender<Pending>,
    capacity: usize,
    /// A text model's tokens in flight, and the most a text may take (its maximum length).
    tokens: Option<TokenBudget>,
}

/// The tokens a text model's requests hold, counted before they are tokenized: a text takes at
/// most its bytes plus the special tokens, and at most the model's maximum length.
#[derive(Clone)]
struct TokenBudget {
    permits: Arc<Semaphore>,
    limit: usize,
    max_length: usize,
    texts_per_row: usize,
}

/// Special tokens a row may add around its texts (`<s> a </s></s> b </s>`).
const SPECIAL_TOKENS: usize = 4;

impl TokenBudget {
    /// The most tokens `batch`'s rows may take.
    fn bound(&self, batch: &Batch) -> usize {
        (0..batch.rows)
            .map(|row| {
                let bytes: usize =
                    (0..self.texts_per_row).map(|i| batch.text.get(row * self.texts_per_row + i).len()).sum();
                (bytes + SPECIAL_TOKENS).min(self.max_length)
            })
            .sum()
    }

    fn hold(&self, tokens: usize) -> Result<OwnedSemaphorePermit, InferError> {
        if tokens > self.limit {
            return Err(InferError::TooManyTokens { tokens, limit: self.limit });
        }
        let units = u32::try_from(tokens).unwrap_or(u32::MAX);
        Arc::clone(&self.permits).try_acquire_many_owned(units).map_err(|_| InferError::TokensBusy {
            held: self.limit - self.permits.available_permits(),
            limit: self.limit,
        })
    }
}

struct Pending {
    input: Input,
    rows: usize,
    reply: oneshot::Sender<Result<Vec<OutputValues>, InferError>>,
}

/// A request's rows as the model takes them.
enum Input {
    /// `rows * n_features` floats, row-major.
    Features(Vec<f32>),
    /// A model of column inputs' typed columns.
    Columns(Box<Batch>),
}

impl Batcher {
    /// Starts batching for `model`; the batcher stops when the last handle is dropped.
    pub fn start(model: Arc<LoadedModel>, settings: BatchSettings, observer: Arc<dyn BatchObserver>) -> Self {
        let (requests, queue) = mpsc::channel(settings.queue_capacity.max(1));
        let limit = settings.max_batch_tokens.clamp(1, Semaphore::MAX_PERMITS);
        let tokens = model.model.text.as_ref().map(|encoder| TokenBudget {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            max_length: encoder.layout.max_length,
            texts_per_row: model.model.column_inputs.len().max(1),
        });
        tokio::spawn(gather(model, settings, queue, observer));
        Self { requests, capacity: settings.queue_capacity.max(1), tokens }
    }

    /// Requests waiting to join a batch.
    pub fn waiting(&self) -> usize {
        self.capacity - self.requests.capacity()
    }

    /// The predictions for `rows` rows of `features` (row-major), each output's values for
    /// these rows only.
    pub async fn infer(&self, features: Vec<f32>, rows: usize) -> Result<Vec<OutputValues>, InferError> {
        if rows == 0 || !features.len().is_multiple_of(rows) {
            return Err(InferError::Model(format!("{} values do not make {rows} rows", features.len())));
        }
        self.send(Input::Features(features), rows).await
    }

    /// The predictions for the rows of a model of column inputs. They run with the requests
    /// queued beside them, each request's columns a run of its own.
    /// A text model's rows hold their tokens until answered; what does not fit in
    /// `max_batch_tokens` beside the requests in flight is refused at once.
    pub async fn infer_columns(&self, columns: Batch) -> Result<Vec<OutputValues>, InferError> {
        let rows = columns.rows;
        let _tokens = self.tokens.as_ref().map(|budget| budget.hold(budget.bound(&columns))).transpose()?;
        self.send(Input::Columns(Box::new(columns)), rows).await
    }

    async fn send(&self, input: Input, rows: usize) -> Result<Vec<OutputValues>, InferError> {
        let (reply, answer) = oneshot::channel();
        self.requests.try_send(Pending { input, rows, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => InferError::Overloaded(self.capacity),
            mpsc::error::TrySendError::Closed(_) => InferError::Stopped,
        })?;
        answer.await.map_err(|_| InferError::Stopped)?
    }
}

/// The most rows of one model run: a larger request runs in parts of this many rows, so the
/// model's intermediate tensors stay a few MB however many rows a request brings. A multiple of
/// [`RUN_ROW_MULTIPLE`], so the answers are those of one run.
pub const MAX_RUN_ROWS: usize = 8192;

/// Rows a request takes in a batch: its own, rounded up to a whole run group.
fn slots(rows: usize) -> usize {
    rows.max(1).next_multiple_of(RUN_ROW_MULTIPLE)
}

async fn gather(
    model: Arc<LoadedModel>,
    settings: BatchSettings,
    mut queue: mpsc::Receiver<Pending>,
    observer: Arc<dyn BatchObserver>,
) {
    let running = Arc::new(Semaphore::new(settings.parallel.max(1)));
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut batch = Gathering::new(first, settings.max_batch_rows);
        // What the server has read already: the connections with a request in hand run first and
        // queue it, once more while that adds requests. Under load a batch so takes the requests
        // that arrived with the first (otherwise most batches would hold one request, each paying
        // a hand-over to a blocking thread); an idle server yields once, to nobody.
        loop {
            tokio::task::yield_now().await;
            if batch.take_queued(&mut queue) == 0 || !batch.is_open() {
                break;
            }
        }
        // Then what comes within the delay, if there is one.
        if !settings.max_delay.is_zero() {
            let deadline = Instant::now() + settings.max_delay;
            while batch.is_open() {
                match tokio::time::timeout_at(deadline, queue.recv()).await {
                    Ok(Some(next)) => batch.add(next),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        // Then, once a run is free, what came while every run was busy.
        let Ok(permit) = Arc::clone(&running).acquire_owned().await else { return };
        batch.take_queued(&mut queue);
        carried = batch.left_over.take();
        let model = Arc::clone(&model);
        let observer = Arc::clone(&observer);
        let requests = batch.requests;
        tokio::task::spawn_blocking(move || {
            run(&model.model, requests, observer.as_ref());
            drop(permit);
        });
    }
}

/// A batch being gathered: open until it is full or a request did not fit (that request starts
/// the next batch).
struct Gathering {
    requests: Vec<Pending>,
    used: usize,
    max_rows: usize,
    left_over: Option<Pending>,
}

impl Gathering {
    fn new(first: Pending, max_rows: usize) -> Self {
        Self { used: slots(first.rows), requests: vec![first], max_rows, left_over: None }
    }

    fn is_open(&self) -> bool {
        self.used < self.max_rows && self.left_over.is_none()
    }

    /// Adds what is queued while the batch is open; returns how many requests it took.
    fn take_queued(&mut self, queue: &mut mpsc::Receiver<Pending>) -> usize {
        let mut taken = 0;
        while self.is_open() {
            let Ok(next) = queue.try_recv() else { break };
            self.add(next);
            taken += 1;
        }
        taken
    }

    fn add(&mut self, next: Pending) {
        if self.used + slots(next.rows) > self.max_rows {
            self.left_over = Some(next);
        } else {
            self.used += slots(next.rows);
            self.requests.push(next);
        }
    }
}

/// Runs one batch and answers each of its requests.
fn run(model: &Model, batch: Vec<Pending>, observer: &dyn BatchObserver) {
    if !model.column_inputs.is_empty() {
        observer.batch_ran(batch.len(), batch.iter().map(|p| p.rows).sum());
        for pending in batch {
            let answer = match &pending.input {
                Input::Columns(columns) => model.predict_batch(columns).map_err(|e| InferError::Model(e.to_string())),
                Input::Features(_) => {
                    Err(InferError::Model("the model takes typed columns, not rows of floats".into()))
                }
            };
            let _ = pending.reply.send(answer);
        }
        return;
    }
    let n = model.n_features;
    if let [single] = &batch[..]
        && let Input::Features(values) = &single.input
    {
        // A request alone runs from its own rows, part by part.
        observer.batch_ran(1, single.rows);
        let answer = predict_in_parts(model, &values[..single.rows * n], single.rows);
        let _ = batch.into_iter().next().map(|pending| pending.reply.send(answer));
        return;
    }
    let total: usize = batch.iter().map(|p| slots(p.rows)).sum();
    let mut features = vec![0.0f32; total * n];
    let mut offset = 0;
    for pending in &batch {
        // A float model's requests are all features (the protocols parse by the model's inputs).
        if let Input::Features(values) = &pending.input {
            features[offset * n..(offset + pending.rows) * n].copy_from_slice(&values[..pending.rows * n]);
        }
        offset += slots(pending.rows);
    }
    observer.batch_ran(batch.len(), batch.iter().map(|p| p.rows).sum());
    let predictions = model.predict(&features, total);
    let mut offset = 0;
    for pending in batch {
        let answer = match &predictions {
            Ok(outputs) => Ok(outputs
                .iter()
                .zip(&model.outputs)
                .map(|(values, spec)| values.rows(offset, pending.rows, spec.width()))
                .collect()),
            Err(error) => Err(InferError::Model(error.to_string())),
        };
        offset += slots(pending.rows);
        // A request whose client went away is simply not answered.
        let _ = pending.reply.send(answer);
    }
}

/// The predictions for `rows` rows, in runs of at most [`MAX_RUN_ROWS`].
fn predict_in_parts(model: &Model, features: &[f32], rows: usize) -> Result<Vec<OutputValues>, InferError> {
    let n = model.n_features;
    let failed = |e: crate::engine::model::ModelError| InferError::Model(e.to_string());
    let first = rows.min(MAX_RUN_ROWS);
    let mut outputs = model.predict(&features[..first * n], first).map_err(failed)?;
    let mut start = first;
    while start < rows {
        let end = (start + MAX_RUN_ROWS).min(rows);
        for (all, part) in
            outputs.iter_mut().zip(model.predict(&features[start * n..end * n], end - start).map_err(failed)?)
        {
            all.append(part);
        }
        start = end;
    }
    Ok(outputs)
}
