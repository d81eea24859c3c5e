//! Text encoders as the Hugging Face hub ships them: a transformer exported to ONNX with BERT's
//! inputs, its `tokenizer.json`, and sentence-transformers' modules after it ([`folder`]). A
//! batch of texts is tokenized by the `tokenizers` library (the one the Python tokenizers are:
//! the same ids), truncated to the model's maximum, run in runs of texts of similar lengths
//! (sorted, so that little is padding), and each row's token embeddings are pooled
//! ([`pooling`]) and, when the folder says so, normalised: what `SentenceTransformer.encode`
//! returns. A model with a task head instead ([`head`]) gives a label and probabilities, a
//! cross-encoder's score of a pair of texts, or a token classifier's entities ([`entities`]).

pub mod entities;
pub mod folder;
pub mod head;
pub mod pooling;

use tokenizers::{EncodeInput, Encoding, Tokenizer, TruncationParams};

pub use entities::Piece;
pub use folder::{FolderError, Layout, TextFolder};
pub use head::{Activation, Head};
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

/// What an embedding model's chosen output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embeddings {
    /// `[rows, tokens, width]`: pooled here (`last_hidden_state`, `token_embeddings`).
    Tokens,
    /// `[rows, width]`: pooled in the model already (`sentence_embedding`).
    Sentence,
}

/// How texts become the model's inputs and its output their answers.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    pad_id: u32,
    pub layout: Layout,
    /// The model's inputs, in its order.
    pub feeds: Vec<Feed>,
    /// What the model's one output (the plan keeps only the one read) holds, and what is made
    /// of it.
    pub head: Head,
    /// The output's last dimension: the embedding's width, or the labels'.
    pub width: usize,
    /// Whether a row is a pair of texts (a cross-encoder's query and passage).
    pub pairs: bool,
}

/// A row's text, or pair of texts.
pub type TextRow<'a> = (&'a str, Option<&'a str>);

/// The texts of one run, tokenized and padded to the longest: `[rows, length]` each.
pub struct Tokens {
    pub length: usize,
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub type_ids: Vec<i64>,
    /// Each row's tokens for grouping into entities (a token classifier's runs only): one a
    /// position, `None` for special tokens.
    pub pieces: Vec<Vec<Option<Piece>>>,
    /// Rows longer than the model reads, cut to its maximum.
    pub truncated: usize,
}

impl TextEncoder {
    /// The tokenizer of `tokenizer.json`, truncating to the layout's maximum.
    pub fn new(
        tokenizer_json: &[u8],
        layout: Layout,
        feeds: Vec<Feed>,
        head: Head,
        width: usize,
        pairs: bool,
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
        Ok(Self { tokenizer, pad_id, layout, feeds, head, width, pairs })
    }

    /// A text's (or pair's) tokens, truncated to the maximum (what was cut is its overflow;
    /// of a pair, the longer text is cut first). A token classifier's offsets count characters,
    /// as Python does (entities' `start` and `end`); no other head reads them.
    pub fn encode(&self, (text, pair): TextRow) -> Result<Encoding, String> {
        let input = match pair {
            None => EncodeInput::Single(text.into()),
            Some(pair) => EncodeInput::Dual(text.into(), pair.into()),
        };
        let encoded = match self.head {
            Head::Entities { .. } => self.tokenizer.encode_char_offsets(input, true),
            _ => self.tokenizer.encode(input, true),
        };
        encoded.map_err(|e| format!("the tokenizer failed: {e}"))
    }

    /// `rows` tokenized and padded to the longest.
    pub fn tokens(&self, rows: &[TextRow]) -> Result<Tokens, String> {
        let encoded = rows.iter().map(|&row| self.encode(row)).collect::<Result<Vec<_>, _>>()?;
        let length = encoded.iter().map(Encoding::len).max().unwrap_or(0).max(1);
        let mut tokens = Tokens {
            length,
            ids: Vec::with_capacity(rows.len() * length),
            mask: Vec::with_capacity(rows.len() * length),
            type_ids: Vec::with_capacity(rows.len() * length),
            pieces: Vec::new(),
            truncated: encoded.iter().filter(|e| !e.get_overflowing().is_empty()).count(),
        };
        if matches!(self.head, Head::Entities { .. }) {
            tokens.pieces = rows.iter().zip(&encoded).map(|(row, e)| self.pieces(row.0, e)).collect();
        }
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

    /// A text's tokens as entities are made of them: special tokens `None`; an unknown token
    /// spelled as the text it stands for, as transformers' pipeline spells it.
    fn pieces(&self, text: &str, encoding: &Encoding) -> Vec<Option<Piece>> {
        let unknown = self.tokenizer.token_to_id("[UNK]").or_else(|| self.tokenizer.token_to_id("<unk>"));
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let slice = |start: usize, end: usize| {
            let byte = |c: usize| chars.get(c).map_or(text.len(), |&(b, _)| b);
            text[byte(start)..byte(end)].to_owned()
        };
        let special = encoding.get_special_tokens_mask();
        (0..encoding.len())
            .map(|i| {
                let (start, end) = encoding.get_offsets()[i];
                let token = match Some(encoding.get_ids()[i]) == unknown {
                    true => slice(start, end),
                    false => encoding.get_tokens()[i].clone(),
                };
                (special[i] == 0).then_some(Piece { token, start, end })
            })
            .collect()
    }

    /// The tokenizer's decoding of tokens into text (`["new", "##s"]` to `news`), as
    /// transformers' `convert_tokens_to_string`.
    fn decode(&self, tokens: Vec<String>) -> String {
        match self.tokenizer.get_decoder() {
            Some(decoder) => {
                use tokenizers::Decoder;
                decoder.decode(tokens.clone()).unwrap_or_else(|_| tokens.join(" "))
            }
            None => tokens.join(" "),
        }
    }

    /// Orders `rows` for runs of similar lengths: their indexes, longest first (by bytes, a
    /// cheap stand-in for tokens).
    pub fn run_order(rows: &[TextRow]) -> Vec<usize> {
        let bytes = |&(text, pair): &TextRow| text.len() + pair.map_or(0, str::len);
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(bytes(&rows[i])));
        order
    }

    /// Floats a row of the answer (0 for entities, which are text).
    pub fn answer_width(&self) -> usize {
        self.head.width(self.width)
    }

    /// The model's output for `rows` rows of `tokens` made into [`Self::answer_width`] floats
    /// a row in `out`: pooled and normalised embeddings, probabilities, or scores.
    pub fn finish(&self, output: &[f32], tokens: &Tokens, rows: usize, out: &mut [f32]) {
        self.head.finish(&self.layout, output, tokens, rows, self.width, out);
    }

    /// A token classifier's output `[rows, length, labels]`: each row's entities as a JSON
    /// array.
    pub fn entities(&self, output: &[f32], tokens: &Tokens, rows: usize) -> Vec<String> {
        let Head::Entities { labels } = &self.head else { return vec![String::new(); rows] };
        let span = tokens.length * labels.len();
        let decode = |pieces: Vec<String>| self.decode(pieces);
        (0..rows)
            .map(|row| {
                let logits = &output[row * span..(row + 1) * span];
                entities::to_json(&entities::group(logits, labels, &tokens.pieces[row], &decode))
            })
            .collect()
    }
}
