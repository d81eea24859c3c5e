//! Image models: an image (JPEG, PNG, WebP) in, the top k classes out, with the preprocessing the
//! model configuration declares ([`config`]) and no code per model.
//!
//! - [`decode`]: bytes to upright pixels, within a pixel limit.
//! - [`preprocess`]: pixels to the model's input ([`resample`]: Pillow's resize, to the bit).
//! - [`classify`]: the model's scores to the top k classes, as JSON.

pub mod classify;
pub mod config;
pub mod decode;
pub mod preprocess;
pub mod resample;

pub use classify::{Classifier, Prediction};
pub use config::{ImageConfig, Labels};
pub use decode::ImageError;
pub use preprocess::Preprocessor;

use super::outputs::OutputValues;

/// What makes a model an image model: how its input is made and its output read.
pub struct ImageModel {
    pub preprocess: Preprocessor,
    pub classifier: Classifier,
    /// Which of the model's outputs holds the class scores.
    pub scores_output: usize,
}

impl ImageModel {
    /// The top k of image `index` of a model run's `outputs`.
    pub fn top_k(&self, outputs: &[OutputValues], index: usize) -> Vec<Prediction> {
        let width = self.classifier.labels.len();
        match outputs.get(self.scores_output) {
            Some(OutputValues::Float(scores)) => {
                scores.get(index * width..(index + 1) * width).map_or_else(Vec::new, |s| self.classifier.top_k(s))
            }
            _ => Vec::new(),
        }
    }
}
