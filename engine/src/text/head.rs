//! What a text model's output is, and what each row's answer is made of it: embeddings (pooled
//! here or in the model), a sequence classifier's `logits` (a label and each class's
//! probability), a cross-encoder's one logit (a score a pair of texts), or a token classifier's
//! `logits` (the entities in a text, grouped as transformers' pipeline groups them).

use super::pooling;
use super::{Embeddings, Layout, Tokens};

/// The task the model's output serves.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// `last_hidden_state` / `token_embeddings` (pooled here) or `sentence_embedding`.
    Embed(Embeddings),
    /// `logits [rows, classes]`: the most likely class and every class's probability.
    Classify { labels: Vec<String>, activation: Activation },
    /// `logits [rows, 1]`: one score a row (a cross-encoder's relevance of a pair of texts, or a
    /// regression's value).
    Score { activation: Activation },
    /// `logits [rows, tokens, labels]`: a label a token, grouped into entities.
    Entities { labels: Vec<String> },
}

/// How logits become the answer, as transformers' pipelines (and sentence-transformers'
/// `CrossEncoder`) turn them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Single-label classification: the probabilities sum to 1.
    Softmax,
    /// Multi-label classification, and a cross-encoder's score: each logit on its own.
    Sigmoid,
    /// Regression: the logits as they are.
    Identity,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Softmax => "softmax",
            Activation::Sigmoid => "sigmoid",
            Activation::Identity => "none",
        }
    }

    /// Turns one row's logits into its scores, in place.
    pub fn apply(self, row: &mut [f32]) {
        match self {
            Activation::Softmax => softmax(row),
            Activation::Sigmoid => row.iter_mut().for_each(|v| *v = sigmoid(*v)),
            Activation::Identity => {}
        }
    }
}

/// numpy's arithmetic as transformers' pipelines do it: the maximum subtracted first.
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|v| *v = (*v - max).exp());
    let sum: f32 = row.iter().sum();
    row.iter_mut().for_each(|v| *v /= sum);
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The index of the largest value, the first of equals (numpy's `argmax`; a stable sort by
/// score, as the pipelines sort, puts it first too).
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}

impl Head {
    /// Floats a row: the embedding's width, the classes, or 1; 0 for entities (text).
    pub fn width(&self, embedding_width: usize) -> usize {
        match self {
            Head::Embed(_) => embedding_width,
            Head::Classify { labels, .. } => labels.len(),
            Head::Score { .. } => 1,
            Head::Entities { .. } => 0,
        }
    }

    pub fn task(&self) -> &'static str {
        match self {
            Head::Embed(_) => "embeddings",
            Head::Classify { .. } => "text classification",
            Head::Score { .. } => "scores",
            Head::Entities { .. } => "token classification",
        }
    }

    /// The model's output for `rows` rows of `tokens` (`[rows, width]`, or `[rows, tokens,
    /// width]` for token embeddings), made into `width` floats a row in `out`: pooled and
    /// normalised embeddings, probabilities, or scores.
    pub fn finish(&self, layout: &Layout, output: &[f32], tokens: &Tokens, rows: usize, width: usize, out: &mut [f32]) {
        for row in 0..rows {
            let answer = &mut out[row * width..(row + 1) * width];
            match self {
                Head::Embed(Embeddings::Tokens) => {
                    let span = tokens.length * width;
                    let mask = &tokens.mask[row * tokens.length..(row + 1) * tokens.length];
                    layout.pooling.pool(&output[row * span..(row + 1) * span], mask, answer);
                }
                _ => answer.copy_from_slice(&output[row * width..(row + 1) * width]),
            }
            match self {
                Head::Embed(_) if layout.normalize => pooling::normalize(answer),
                Head::Embed(_) | Head::Entities { .. } => {}
                Head::Classify { activation, .. } | Head::Score { activation } => activation.apply(answer),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_are_the_pipelines_arithmetic() {
        let mut row = [1.0, 2.0, 3.0];
        Activation::Softmax.apply(&mut row);
        let expected = [0.090_030_57, 0.244_728_48, 0.665_240_94];
        assert!(row.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-7), "{row:?}");
        let mut big = [1000.0, 1000.0];
        Activation::Softmax.apply(&mut big);
        assert_eq!(big, [0.5, 0.5]);
        let mut row = [0.0, -40.0];
        Activation::Sigmoid.apply(&mut row);
        assert_eq!(row[0], 0.5);
        assert!(row[1] > 0.0 && row[1] < 1e-17);
        assert_eq!(argmax(&[0.2, 0.4, 0.4]), 1);
    }
}
