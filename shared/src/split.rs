//! What a job message says of splitting its file: one shard of it, or why it runs whole. A leaf
//! of the crate: the job message carries it, and [`crate::shards`] plans and runs it.

use serde::{Deserialize, Serialize};

/// One shard of a file: bytes `[start, end)`, shard `index` of `count` (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
    pub start: u64,
    pub end: u64,
}

impl Shard {
    /// The plan's shard size, as every shard of one plan tells it.
    pub fn stride(&self) -> u64 {
        match self.index {
            0 if self.count > 1 => self.end,
            0 => 0,
            index => self.start / u64::from(index),
        }
    }
}

/// What a job message says of splitting (version 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// This message is one shard of the file.
    Shard(Shard),
    /// The file is larger than the shard size but runs whole, for this reason.
    Whole { reason: String },
}
