//! An S3 object read by ranged GETs, for the engine's Parquet reader: each read a GET pinned to
//! the version the job reads (`If-Match` its ETag), retried as every store call is. The engine
//! runs on a blocking thread, so each read blocks on the runtime it was made on.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::runtime::Handle;

use crate::engine::RangeRead;
use crate::store::{ObjectStore, StoreError};
use crate::transfer::{InputSpec, Transfers};

/// One input object, `size` bytes long; clones share its failure and byte count.
#[derive(Clone)]
pub struct RangedObject<S: ObjectStore> {
    transfers: Transfers<S>,
    input: InputSpec,
    size: u64,
    runtime: Handle,
    /// The first read that failed, with the store's error (its code tells a replaced object
    /// from a refused or failed read).
    failure: Arc<Mutex<Option<StoreError>>>,
    bytes_read: Arc<AtomicU64>,
}

impl<S: ObjectStore> RangedObject<S> {
    /// Made on the runtime its reads will block on.
    pub fn new(transfers: Transfers<S>, input: InputSpec, size: u64) -> Self {
        Self { transfers, input, size, runtime: Handle::current(), failure: Arc::default(), bytes_read: Arc::default() }
    }

    /// The first failed read's error, taken.
    pub fn take_failure(&self) -> Option<StoreError> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The bytes fetched so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

impl<S: ObjectStore> RangeRead for RangedObject<S> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_range(&self, range: Range<u64>) -> io::Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let read = self.runtime.block_on(self.transfers.read_input_range(&self.input, (range.start, range.end)));
        match read {
            Ok(bytes) => {
                self.bytes_read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(bytes)
            }
            Err(error) => {
                let message = error.to_string();
                self.failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(error);
                Err(io::Error::other(message))
            }
        }
    }
}
