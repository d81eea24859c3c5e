//! Big files in byte-range shards: how the trigger splits a file, and what the workers of one
//! file leave for each other in the output bucket.
//!
//! A file larger than the shard size (`SHARD_BYTES`) whose rows can be found from the middle
//! (CSV, TSV and JSON Lines, uncompressed, by lines; Parquet by row groups) becomes one job
//! message per shard ([`Split::Shard`]).
//! Each shard's worker stages its output, then records that it is done; the worker that finds
//! every shard done assembles the file's one output. The exactly-once decisions (which model
//! version runs, what is published, who announces it) are objects written with
//! `If-None-Match: *`, which S3 lets only one writer create. Everything lives under
//! [`Staging::prefix`] in the output bucket, which the template's lifecycle rule expires.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::job::JobMessage;
use crate::report::{JobReport, ModelInfo, RowCounts, RowError};
pub use crate::split::{Shard, Split};

/// The default shard size: 256 MiB.
pub const DEFAULT_SHARD_BYTES: u64 = 256 * 1024 * 1024;
/// The most shards one file is split into (larger files get larger shards): the output is
/// assembled from at most two multipart parts per shard, and S3 allows 10,000.
pub const MAX_SHARDS: u64 = 1000;
/// The folder of the output location under which shards stage their work.
pub const STAGING_FOLDER: &str = "_sluice/shards/";

/// How the trigger sends a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Splitting {
    /// One message, as small files go (or sharding is off).
    Whole,
    /// One message per shard.
    Shards(Vec<Shard>),
    /// One message that says why a big file is not split.
    NotSplit(String),
}

/// How a file of `size` bytes under `key` is sent, with shards of `shard_bytes` (0: never).
pub fn splitting(key: &str, size: u64, shard_bytes: u64) -> Splitting {
    if shard_bytes == 0 || size <= shard_bytes {
        return Splitting::Whole;
    }
    let lower = key.to_ascii_lowercase();
    let extension = lower.rsplit_once('.').map_or("", |(_, ext)| ext);
    let reason = match extension {
        // Parquet by row groups: a shard owns those whose first byte is in its range.
        "csv" | "tsv" | "jsonl" | "ndjson" | "parquet" => return Splitting::Shards(plan(size, shard_bytes)),
        "gz" | "tgz" => "it is gzip-compressed: a gzip stream can only be read from its start",
        "tar" => "it is an archive of images: an archive is read from its start",
        "jpg" | "jpeg" | "png" | "webp" => "it is one image",
        // Not a format sluice reads: the worker reports that.
        _ => return Splitting::Whole,
    };
    Splitting::NotSplit(reason.to_owned())
}

/// The shards of a file of `size` bytes: `shard_bytes` each (the last one shorter), grown so
/// that there are at most [`MAX_SHARDS`].
pub fn plan(size: u64, shard_bytes: u64) -> Vec<Shard> {
    let shard_bytes = shard_bytes.max(1).max(size.div_ceil(MAX_SHARDS));
    let count = size.div_ceil(shard_bytes).max(1);
    (0..count)
        .map(|i| Shard {
            index: i as u32,
            count: count as u32,
            start: i * shard_bytes,
            end: ((i + 1) * shard_bytes).min(size),
        })
        .collect()
}

/// Where the shards of one input object version keep their work: `<output prefix>_sluice/shards/<id>/`,
/// the id a digest of the input's bucket, key, ETag and version id (so a re-upload has its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staging {
    pub bucket: String,
    pub prefix: String,
}

impl Staging {
    pub fn for_job(job: &JobMessage) -> Self {
        let input = &job.input;
        let mut digest = Sha256::new();
        for part in [&input.bucket, &input.key, &input.etag, input.version_id.as_deref().unwrap_or("")] {
            digest.update(part.as_bytes());
            digest.update([0]);
        }
        // The plan too: messages of the same upload split another way (the shard size changed
        // between two deliveries of its event) must not mix their shards.
        if let Some(shard) = job.shard() {
            digest.update(shard.count.to_le_bytes());
            digest.update(shard.stride().to_le_bytes());
        }
        let id: String = digest.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self { bucket: job.output.bucket.clone(), prefix: format!("{}{STAGING_FOLDER}{id}/", job.output.prefix) }
    }

    /// The model version every shard runs, decided by the first shard that resolves it.
    pub fn model(&self) -> String {
        format!("{}model.json", self.prefix)
    }

    /// Shard `index`'s predictions.
    pub fn output(&self, index: u32) -> String {
        format!("{}out/{index:05}", self.prefix)
    }

    /// Shard `index`'s rejected rows, line numbers its own.
    pub fn errors(&self, index: u32) -> String {
        format!("{}errors/{index:05}", self.prefix)
    }

    pub fn done_prefix(&self) -> String {
        format!("{}done/", self.prefix)
    }

    /// Shard `index`'s [`ShardDone`].
    pub fn done(&self, index: u32) -> String {
        format!("{}done/{index:05}.json", self.prefix)
    }

    /// The file's [`Claim`]: what is published, decided once.
    pub fn claim(&self) -> String {
        format!("{}claim.json", self.prefix)
    }

    /// Present once the completion event was put.
    pub fn announced(&self) -> String {
        format!("{}announced", self.prefix)
    }

    /// Written by the worker that puts the completion event, before it does: an [`Announcing`].
    pub fn announcing(&self) -> String {
        format!("{}announcing.json", self.prefix)
    }
}

/// Who is putting a file's completion event, since when: a claim that outlives the time a
/// worker has for it belongs to a worker that stopped, and the event is put again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcing {
    pub worker_id: String,
    pub since: chrono::DateTime<chrono::Utc>,
}

/// What a shard leaves when its work is staged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardDone {
    pub shard: Shard,
    /// The model that ran (every shard runs the one the first to resolve it pinned).
    pub model: ModelInfo,
    /// The lines whose first byte is in the shard's range: the next shard's line 1 is the
    /// line after all earlier shards' lines.
    pub lines: u64,
    pub rows: RowCounts,
    /// Line numbers counted from the shard's first line.
    #[serde(default)]
    pub first_errors: Vec<RowError>,
    pub output_bytes: u64,
    /// 0: no errors file.
    pub errors_bytes: u64,
    pub started_at: DateTime<Utc>,
    pub seconds: f64,
    pub worker_id: String,
    pub attempt: u32,
}

/// An output assembled from the shards' and not yet visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Assembled {
    /// Nothing to write: an empty object.
    Empty,
    /// An open multipart upload of the output's key; completing it makes the output appear.
    Parts { upload_id: String, parts: Vec<(i32, String)> },
}

/// The decision for a file, written once (`If-None-Match: *`). Whoever reads it can carry it
/// out, so a worker that dies after writing it leaves nothing undone: the next one finishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Claim {
    /// The file cannot be split: shard `shard`'s message runs it whole.
    Whole { shard: u32, reason: String },
    /// The outcome: complete these uploads, then write this report.
    Publish {
        report: Box<JobReport>,
        #[serde(default)]
        data: Option<Assembled>,
        #[serde(default)]
        errors: Option<Assembled>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_and_sharding_off_are_one_message() {
        assert_eq!(splitting("a.csv", 100, 100), Splitting::Whole);
        assert_eq!(splitting("a.csv", 10_000, 0), Splitting::Whole);
        assert_eq!(splitting("a.xlsx", 10_000, 100), Splitting::Whole);
    }

    #[test]
    fn tables_are_split_and_compressed_files_and_images_say_why_not() {
        let Splitting::Shards(shards) = splitting("in/Data.CSV", 250, 100) else { panic!() };
        assert_eq!(shards.len(), 3);
        assert!(matches!(splitting("x.jsonl", 250, 100), Splitting::Shards(_)));
        assert!(matches!(splitting("x.tsv", 250, 100), Splitting::Shards(_)));
        for (key, word) in [("x.csv.gz", "gzip"), ("x.tgz", "gzip"), ("x.tar", "archive"), ("x.jpg", "image")] {
            let Splitting::NotSplit(reason) = splitting(key, 250, 100) else { panic!("{key}") };
            assert!(reason.contains(word), "{key}: {reason}");
        }
        assert!(matches!(splitting("x.parquet", 250, 100), Splitting::Shards(_)));
    }

    #[test]
    fn the_plan_covers_the_file_once_in_order() {
        for (size, shard_bytes, count) in [(250, 100, 3), (300, 100, 3), (101, 100, 2), (1, 1, 1)] {
            let shards = plan(size, shard_bytes);
            assert_eq!(shards.len(), count, "{size}/{shard_bytes}");
            assert_eq!(shards[0].start, 0);
            assert_eq!(shards.last().unwrap().end, size);
            for pair in shards.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
            }
            assert!(shards.iter().enumerate().all(|(i, s)| s.index as usize == i && s.count as usize == count));
        }
    }

    #[test]
    fn a_huge_file_gets_larger_shards_not_more() {
        let shards = plan(100 << 30, 1 << 20);
        assert_eq!(shards.len() as u64, MAX_SHARDS);
        assert_eq!(shards.last().unwrap().end, 100 << 30);
    }

    #[test]
    fn staging_is_per_input_version_under_the_output_prefix() {
        let job = JobMessage::from_json(
            r#"{"version": 1, "input": {"bucket": "in", "key": "a.csv", "size": 1, "etag": "e1"},
            "output": {"bucket": "out", "prefix": "results/"}, "model_uri": "m.onnx",
            "event_time": "2026-11-21T08:00:00Z"}"#,
        )
        .unwrap();
        let staging = Staging::for_job(&job);
        assert_eq!(staging.bucket, "out");
        assert!(staging.prefix.starts_with("results/_sluice/shards/") && staging.prefix.ends_with('/'));
        assert_eq!(staging.done(3), format!("{}done/00003.json", staging.prefix));
        let mut reuploaded = job.clone();
        reuploaded.input.etag = "e2".into();
        assert_ne!(Staging::for_job(&reuploaded).prefix, staging.prefix);
        // Every shard of a plan shares one staging prefix; another plan of the file has its own.
        let staged = |shard_bytes: u64, index: usize| {
            let shard = plan(1000, shard_bytes)[index];
            Staging::for_job(&job.clone().with_split(Split::Shard(shard))).prefix
        };
        assert_eq!(staged(300, 0), staged(300, 3));
        assert_eq!(staged(300, 1), staged(300, 2));
        assert_ne!(staged(300, 0), staged(250, 0));
    }
}
