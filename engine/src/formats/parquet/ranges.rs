//! Random access to a Parquet file: its footer, then each row group's column chunks that a run
//! needs, fetched up front (a ranged GET each from S3, coalesced when close) so that decoding
//! reads only memory.

use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use parquet::errors::ParquetError;
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::reader::{ChunkReader, Length};

/// A file read by byte ranges: a local file, an S3 object (ranged GETs), bytes in memory.
pub trait RangeRead: Send + Sync {
    /// The file's size in bytes.
    fn size(&self) -> u64;
    /// Bytes `[range.start, range.end)`, all of them.
    fn read_range(&self, range: Range<u64>) -> io::Result<Bytes>;
}

impl RangeRead for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }

    fn read_range(&self, range: Range<u64>) -> io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let mut buffer = vec![0; (range.end - range.start) as usize];
        self.read_exact_at(&mut buffer, range.start)?;
        Ok(buffer.into())
    }
}

impl RangeRead for Bytes {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_range(&self, range: Range<u64>) -> io::Result<Bytes> {
        if range.end > self.len() as u64 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a range past the end of the bytes"));
        }
        Ok(self.slice(range.start as usize..range.end as usize))
    }
}

/// Ranges closer than this are fetched in one request (S3 charges per request, and a request's
/// latency is worth about this many bytes).
const COALESCE_GAP: u64 = 1 << 20;

/// The file for parquet's reader, with the first I/O failure kept: parquet's error keeps only
/// its text, and the caller needs its kind (a network failure is tried again, bad data is not).
#[derive(Clone)]
pub(crate) struct File {
    inner: Arc<dyn RangeRead>,
    failure: Arc<Mutex<Option<io::Error>>>,
}

impl File {
    pub(crate) fn new(inner: Arc<dyn RangeRead>) -> Self {
        Self { inner, failure: Arc::default() }
    }

    pub(crate) fn size(&self) -> u64 {
        self.inner.size()
    }

    /// The first read that failed, taken.
    pub(crate) fn take_failure(&self) -> Option<io::Error> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub(crate) fn read(&self, range: Range<u64>) -> Result<Bytes, ParquetError> {
        if range.end > self.size() || range.start > range.end {
            return Err(ParquetError::General(format!(
                "the footer names bytes {}..{} of a file of {} bytes: the file is truncated or its footer is wrong",
                range.start,
                range.end,
                self.size()
            )));
        }
        self.inner.read_range(range).map_err(|error| {
            let message = error.to_string();
            self.failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(error);
            ParquetError::External(message.into())
        })
    }

    /// The column chunks of `row_group` whose leaf columns `wanted` says to read, fetched now.
    pub(crate) fn fetch(
        &self,
        row_group: &RowGroupMetaData,
        wanted: impl Fn(usize) -> bool,
    ) -> Result<Fetched, ParquetError> {
        let mut ranges: Vec<(u64, u64)> = row_group
            .columns()
            .iter()
            .enumerate()
            .filter(|&(i, _)| wanted(i))
            .map(|(_, column)| {
                let (start, length) = column.byte_range();
                (start, start.saturating_add(length))
            })
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(COALESCE_GAP) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        let pieces = merged
            .into_iter()
            .map(|(start, end)| Ok((start, self.read(start..end)?)))
            .collect::<Result<_, ParquetError>>()?;
        Ok(Fetched { size: self.size(), pieces })
    }
}

impl Length for File {
    fn len(&self) -> u64 {
        self.size()
    }
}

/// The footer is read through this: a request per read.
impl ChunkReader for File {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        Ok(self.read(start..self.size())?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.read(start..start.saturating_add(length as u64))
    }
}

/// One row group's fetched column chunks: what its decoding reads, and all it may read.
pub(crate) struct Fetched {
    size: u64,
    /// `(offset in the file, bytes)`, in file order.
    pieces: Vec<(u64, Bytes)>,
}

impl Fetched {
    fn piece(&self, start: u64, length: u64) -> Result<Bytes, ParquetError> {
        self.pieces
            .iter()
            .find(|(at, bytes)| *at <= start && start.saturating_add(length) <= at + bytes.len() as u64)
            .map(|(at, bytes)| bytes.slice((start - at) as usize..(start - at + length) as usize))
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "a page at bytes {start}..{} lies outside its column chunk: the file's footer is wrong",
                    start.saturating_add(length)
                ))
            })
    }
}

impl Length for Fetched {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for Fetched {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        let (at, bytes) = self
            .pieces
            .iter()
            .find(|(at, bytes)| *at <= start && start < at + bytes.len() as u64)
            .ok_or_else(|| ParquetError::General(format!("byte {start} lies outside the column chunks read")))?;
        Ok(bytes.slice((start - at) as usize..).reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.piece(start, length as u64)
    }
}
