//! Text encoders as the Hugging Face hub ships them: a transformer exported to ONNX with BERT's
//! inputs, its `tokenizer.json`, and sentence-transformers' modules after it ([`folder`]). A
//! batch of texts is tokenized by the `tokenizers` library (the one the Python tokenizers are:
//! the same ids), truncated to the model's maximum, run in runs of texts of similar lengths
//! (sorted, so that little is padding), and each row's token embeddings are pooled
//! ([`pooling`]) and, when the folder says so, normalised: what `SentenceTransformer.encode`
//! returns.

pub mod folder;
pub mod pooling;

use tokenizers::{Encoding, Tokenizer, TruncationParams};

pub use folder::{FolderError, Layout, TextFolder};
pub use pooling::Pooling;

/// Texts run through the model at once: sorted by length, so that each run pads little.
pub const RUN_TEXTS: usize = 32;

/// A model input the encoder feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    InputIds,
    AttentionMask,
    TokenTypeIds,
}

impl Feed {
    pub fn name(self) -> &'static str {
        match self {
            Feed::InputIds => "input_ids",
            Feed::AttentionMask => "attention_mask",
            Feed::TokenTypeIds => "token_type_ids",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "input_ids" => Some(Feed::InputIds),
            "attention_mask" => Some(Feed::AttentionMask),
            "token_type_ids" => Some(Feed::TokenTypeIds),
            _ => None,
        }
    }
}

/// What the model's chosen output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embeddings {
    /// `[rows, tokens, width]`: pooled here (`last_hidden_state`, `token_embeddings`).
    Tokens,
    /// `[rows, width]`: pooled in the model already (`sentence_embedding`).
    Sentence,
}

/// How texts become the model's inputs and its output their embeddings.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    pad_id: u32,
    pub layout: Layout,
    /// The model's inputs, in its order.
    pub feeds: Vec<Feed>,
    /// What the model's one output (the plan keeps only the one read) holds.
    pub output: Embeddings,
    pub width: usize,
}

/// The texts of one run, tokenized and padded to the longest: `[rows, length]` each.
pub struct Tokens {
    pub length: usize,
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub type_ids: Vec<i64>,
}

impl TextEncoder {
    /// The tokenizer of `tokenizer.json`, truncating to the layout's maximum.
    pub fn new(
        tokenizer_json: &[u8],
        layout: Layout,
        feeds: Vec<Feed>,
        output: Embeddings,
        width: usize,
    ) -> Result<Self, String> {
        let mut tokenizer =
            Tokenizer::from_bytes(tokenizer_json).map_err(|e| format!("tokenizer.json does not load: {e}"))?;
        let truncation = TruncationParams { max_length: layout.max_length, ..Default::default() };
        tokenizer.with_truncation(Some(truncation)).map_err(|e| format!("tokenizer.json: {e}"))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| ["[PAD]", "<pad>", "<|endoftext|>"].iter().find_map(|t| tokenizer.token_to_id(t)))
            .unwrap_or(0);
        tokenizer.with_padding(None);
        Ok(Self { tokenizer, pad_id, layout, feeds, output, width })
    }

    /// A text's tokens, truncated to the maximum (what was cut is its overflow).
    pub fn encode(&self, text: &str) -> Result<Encoding, String> {
        self.tokenizer.encode(text, true).map_err(|e| format!("the tokenizer failed: {e}"))
    }

    /// `texts` tokenized and padded to the longest.
    pub fn tokens(&self, texts: &[&str]) -> Result<Tokens, String> {
        let encoded = texts.iter().map(|t| self.encode(t)).collect::<Result<Vec<_>, _>>()?;
        let length = encoded.iter().map(Encoding::len).max().unwrap_or(0).max(1);
        let mut tokens = Tokens {
            length,
            ids: Vec::with_capacity(texts.len() * length),
            mask: Vec::with_capacity(texts.len() * length),
            type_ids: Vec::with_capacity(texts.len() * length),
        };
        for encoding in encoded {
            let pad = length - encoding.len();
            let padded = |values: &[u32], with: u32| {
                values.iter().chain(std::iter::repeat_n(&with, pad)).map(|&v| i64::from(v)).collect::<Vec<_>>()
            };
            tokens.ids.extend(padded(encoding.get_ids(), self.pad_id));
            tokens.mask.extend(padded(encoding.get_attention_mask(), 0));
            tokens.type_ids.extend(padded(encoding.get_type_ids(), 0));
        }
        Ok(tokens)
    }

    /// Orders `texts` for runs of similar lengths: their indexes, longest first (by bytes, a
    /// cheap stand-in for tokens).
    pub fn run_order(texts: &[&str]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        order
    }

    /// Pools (unless the model did) and normalises the model's output for `rows` rows of
    /// `tokens`, into `out` (`rows * width`).
    pub fn finish(&self, output: &[f32], tokens: &Tokens, rows: usize, out: &mut [f32]) {
        let width = self.width;
        for row in 0..rows {
            let embedding = &mut out[row * width..(row + 1) * width];
            match self.output {
                Embeddings::Sentence => embedding.copy_from_slice(&output[row * width..(row + 1) * width]),
                Embeddings::Tokens => {
                    let span = tokens.length * width;
                    let mask = &tokens.mask[row * tokens.length..(row + 1) * tokens.length];
                    self.layout.pooling.pool(&output[row * span..(row + 1) * span], mask, embedding);
                }
            }
            if self.layout.normalize {
                pooling::normalize(embedding);
            }
        }
    }
}
