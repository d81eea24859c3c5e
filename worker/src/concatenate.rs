//! Objects (or byte ranges of them, and bytes at hand) one after the other as one multipart
//! upload, inside the store where S3 allows it.
//!
//! S3 wants every part but the last to be at least 5 MiB. A source of 5 MiB or more is copied by
//! the store itself (`UploadPartCopy`, in parts of at most 1 GiB); the bytes of smaller ones, and
//! the few MiB that join a small one to its neighbours, are read and uploaded again, never more
//! than 5 MiB per part. [`plan`] decides the parts (a pure function); [`concatenate`] runs them,
//! several at once.

use std::sync::Arc;

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use shared::S3Uri;
use shared::aws_error::{AwsError, AwsErrorKind};
use shared::shards::Assembled;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::store::{ObjectStore, StoreError};
use crate::transfer::Transfers;

/// S3's smallest part, for every part but the last.
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// The largest part copied in one `UploadPartCopy` (S3 allows 5 GiB).
pub const MAX_COPY: u64 = 1024 * 1024 * 1024;
/// Parts under way at once.
const PARTS_AT_ONCE: usize = 8;

/// What goes into the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Bytes `range` of an object.
    Object(S3Uri, Range<u64>),
    /// Bytes at hand (never copied by the store: they are uploaded).
    Bytes(Bytes),
}

impl Source {
    /// A whole object of `size` bytes.
    pub fn object(uri: S3Uri, size: u64) -> Self {
        Source::Object(uri, 0..size)
    }

    pub fn len(&self) -> u64 {
        match self {
            Source::Object(_, range) => range.end - range.start,
            Source::Bytes(bytes) => bytes.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `[start, end)` of this source, as a source.
    fn slice(&self, start: u64, end: u64) -> Source {
        match self {
            Source::Object(uri, range) => Source::Object(uri.clone(), range.start + start..range.start + end),
            Source::Bytes(bytes) => Source::Bytes(bytes.slice(start as usize..end as usize)),
        }
    }
}

/// Bytes `[start, end)` of source `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub source: usize,
    pub start: u64,
    pub end: u64,
}

/// One part of the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Copied by the store.
    Copy(Piece),
    /// Read and uploaded: these pieces, joined.
    Upload(Vec<Piece>),
}

impl Part {
    pub fn len(&self) -> u64 {
        match self {
            Part::Copy(piece) => piece.end - piece.start,
            Part::Upload(pieces) => pieces.iter().map(|p| p.end - p.start).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The parts that join sources of `sizes`, in order.
pub fn plan(sizes: &[u64], min_part: u64, max_copy: u64) -> Vec<Part> {
    let mut parts = Vec::new();
    // Pieces to upload as one part once there are `min_part` bytes of them (or at the end).
    let (mut pending, mut pending_bytes) = (Vec::new(), 0);
    for (source, &size) in sizes.iter().enumerate() {
        let mut at = 0;
        if pending_bytes > 0 {
            let take = size.min(min_part - pending_bytes);
            if take > 0 {
                pending.push(Piece { source, start: 0, end: take });
            }
            (at, pending_bytes) = (take, pending_bytes + take);
            if pending_bytes >= min_part {
                parts.push(Part::Upload(std::mem::take(&mut pending)));
                pending_bytes = 0;
            }
        }
        if size - at < min_part {
            if at < size {
                pending.push(Piece { source, start: at, end: size });
                pending_bytes += size - at;
            }
            continue;
        }
        while at < size {
            let length = match size - at {
                left if left <= max_copy => left,
                left if left - max_copy >= min_part => max_copy,
                left => left - min_part,
            };
            parts.push(Part::Copy(Piece { source, start: at, end: at + length }));
            at += length;
        }
    }
    if !pending.is_empty() {
        parts.push(Part::Upload(pending));
    }
    parts
}

/// `sources`, one after the other, as an open multipart upload of `dest`; see the module
/// documentation.
pub async fn concatenate<S: ObjectStore>(
    transfers: &Transfers<S>,
    dest: &S3Uri,
    content_type: &str,
    sources: &[Source],
) -> Result<Assembled, StoreError> {
    let sizes: Vec<u64> = sources.iter().map(Source::len).collect();
    let parts = plan(&sizes, MIN_PART, MAX_COPY);
    if parts.is_empty() {
        return Ok(Assembled::Empty);
    }
    let upload_id = transfers.create_multipart(dest, content_type).await?;
    match run_parts(transfers, dest, &upload_id, sources, parts).await {
        Ok(parts) => Ok(Assembled::Parts { upload_id, parts }),
        Err(error) => {
            transfers.abort_multipart(dest, &upload_id).await;
            Err(error)
        }
    }
}

async fn run_parts<S: ObjectStore>(
    transfers: &Transfers<S>,
    dest: &S3Uri,
    upload_id: &str,
    sources: &[Source],
    parts: Vec<Part>,
) -> Result<Vec<(i32, String)>, StoreError> {
    let permits = Arc::new(Semaphore::new(PARTS_AT_ONCE));
    // Dropped on an early return, it aborts the parts still under way.
    let mut running = JoinSet::new();
    let mut uploaded = Vec::new();
    for (index, part) in parts.into_iter().enumerate() {
        let permit = Arc::clone(&permits).acquire_owned().await.expect("the semaphore is never closed");
        let (transfers, dest, upload_id) = (transfers.clone(), dest.clone(), upload_id.to_owned());
        let number = index as i32 + 1;
        let source = |piece: &Piece| sources[piece.source].slice(piece.start, piece.end);
        // Bytes at hand are uploaded even where the plan would have the store copy them.
        let (copy, pieces) = match part {
            Part::Copy(piece) => match source(&piece) {
                Source::Object(uri, range) => (Some((uri, range)), Vec::new()),
                bytes => (None, vec![bytes]),
            },
            Part::Upload(pieces) => (None, pieces.iter().map(source).collect()),
        };
        running.spawn(async move {
            let _permit = permit;
            let etag = match copy {
                Some((source, range)) => {
                    transfers.copy_part(&dest, &upload_id, number, &source, (range.start, range.end)).await?
                }
                None => {
                    let mut body = BytesMut::new();
                    for piece in &pieces {
                        match piece {
                            Source::Object(source, range) => {
                                body.extend_from_slice(&transfers.read_range(source, (range.start, range.end)).await?)
                            }
                            Source::Bytes(bytes) => body.extend_from_slice(bytes),
                        }
                    }
                    transfers.upload_part(&dest, &upload_id, number, body.freeze()).await?
                }
            };
            Ok::<_, StoreError>((number, etag))
        });
        // Stop at the first failure rather than after every part.
        while let Some(done) = running.try_join_next() {
            uploaded.push(finished(done)?);
        }
    }
    while let Some(done) = running.join_next().await {
        uploaded.push(finished(done)?);
    }
    uploaded.sort_unstable_by_key(|(number, _)| *number);
    Ok(uploaded)
}

fn finished<T>(done: Result<Result<T, StoreError>, tokio::task::JoinError>) -> Result<T, StoreError> {
    done.map_err(|join| AwsError::other("S3", "UploadPart", AwsErrorKind::Request, join.to_string()))?
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The parts' bytes, in order, as (source, offset) pairs run together.
    fn covered(parts: &[Part]) -> Vec<Piece> {
        let mut pieces: Vec<Piece> = Vec::new();
        for piece in parts.iter().flat_map(|part| match part {
            Part::Copy(piece) => vec![*piece],
            Part::Upload(pieces) => pieces.clone(),
        }) {
            match pieces.last_mut() {
                Some(last) if last.source == piece.source && last.end == piece.start => last.end = piece.end,
                _ => pieces.push(piece),
            }
        }
        pieces
    }

    #[test]
    fn small_sources_are_joined_and_big_ones_copied() {
        let parts = plan(&[3, 12, 2, 2, 7], 5, 100);
        assert_eq!(
            parts,
            [
                Part::Upload(vec![Piece { source: 0, start: 0, end: 3 }, Piece { source: 1, start: 0, end: 2 }]),
                Part::Copy(Piece { source: 1, start: 2, end: 12 }),
                Part::Upload(vec![
                    Piece { source: 2, start: 0, end: 2 },
                    Piece { source: 3, start: 0, end: 2 },
                    Piece { source: 4, start: 0, end: 1 }
                ]),
                Part::Copy(Piece { source: 4, start: 1, end: 7 }),
            ]
        );
        assert!(plan(&[0, 0], 5, 100).is_empty());
    }

    proptest! {
        /// Whatever the sizes: the parts cover every byte once, in order; every part but the
        /// last is at least the minimum; copies are at most the maximum and uploads at most
        /// the minimum plus a source's share.
        #[test]
        fn parts_cover_the_sources_in_order_within_s3s_limits(sizes in prop::collection::vec(0u64..40, 0..12)) {
            let (min, max) = (5, 12);
            let parts = plan(&sizes, min, max);
            let expected: Vec<Piece> = sizes.iter().enumerate().filter(|(_, s)| **s > 0)
                .map(|(source, &end)| Piece { source, start: 0, end }).collect();
            prop_assert_eq!(covered(&parts), expected);
            for (i, part) in parts.iter().enumerate() {
                if i + 1 < parts.len() {
                    prop_assert!(part.len() >= min, "part {} of {:?}", i, parts);
                }
                match part {
                    Part::Copy(piece) => prop_assert!(piece.end - piece.start <= max),
                    Part::Upload(_) => prop_assert!(part.len() < 2 * min),
                }
            }
            prop_assert!(parts.len() <= 2 * sizes.len() + sizes.iter().sum::<u64>() as usize / max as usize + 1);
        }
    }
}
