//! How an image becomes a model's input, as the model configuration declares it (its `image`
//! section): no code per model.

use serde::Deserialize;

/// The `image` section of a model configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// The model's input width and height, in pixels.
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub resize: Resize,
    /// For [`Resize::ShorterSideThenCrop`]: the length the shorter side is resized to before
    /// the centre crop. Default: the larger of width and height, divided by 0.875 (256 for 224).
    #[serde(default)]
    pub shorter_side: Option<u32>,
    #[serde(default)]
    pub color: ColorOrder,
    #[serde(default)]
    pub layout: Layout,
    /// Each 0-255 pixel value is multiplied by this, then `mean` is subtracted and the result
    /// divided by `std`. Default 1/255.
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// One value for every channel, or one per channel (in `color` order). Default 0.
    #[serde(default)]
    pub mean: Vec<f32>,
    /// As `mean`. Default 1.
    #[serde(default)]
    pub std: Vec<f32>,
    /// The class names, in the order of the model's scores: a list, or the name of a text file
    /// beside the model with one class a line (a `labels.txt` or synset file).
    #[serde(default)]
    pub labels: Option<Labels>,
    #[serde(default)]
    pub scores: Scores,
    /// How many of the most likely classes are answered.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

/// How an image is brought to the input size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// The shorter side to `shorter_side` (keeping the aspect ratio), then the centre
    /// `width` x `height` cropped out, as torchvision's `Resize` then `CenterCrop` do.
    #[default]
    ShorterSideThenCrop,
    /// Straight to `width` x `height`, whatever the aspect ratio.
    Stretch,
}

/// The channels the model takes, in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorOrder {
    #[default]
    Rgb,
    Bgr,
    /// One channel: luma as Pillow's `convert("L")` computes it.
    Gray,
}

/// Where the channel dimension is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `[batch, channels, height, width]` (PyTorch, ONNX).
    #[default]
    Nchw,
    /// `[batch, height, width, channels]` (TensorFlow).
    Nhwc,
}

/// What the model's scores are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scores {
    /// Already probabilities (the model ends in a softmax).
    #[default]
    Probabilities,
    /// Logits: sluice applies the softmax.
    Logits,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Labels {
    List(Vec<String>),
    File(String),
}

fn default_scale() -> f32 {
    1.0 / 255.0
}

fn default_top_k() -> usize {
    5
}

/// The largest input side accepted, in pixels.
const MAX_SIDE: u32 = 8192;

impl ImageConfig {
    pub fn channels(&self) -> usize {
        match self.color {
            ColorOrder::Gray => 1,
            ColorOrder::Rgb | ColorOrder::Bgr => 3,
        }
    }

    /// The resized image's shorter side, for [`Resize::ShorterSideThenCrop`].
    pub fn shorter_side(&self) -> u32 {
        self.shorter_side.unwrap_or_else(|| (self.width.max(self.height) as f64 / 0.875).round() as u32)
    }

    /// The input of one image, batch dimension left out: `[c, h, w]` or `[h, w, c]`.
    pub fn input_shape(&self) -> [usize; 3] {
        let (c, h, w) = (self.channels(), self.height as usize, self.width as usize);
        match self.layout {
            Layout::Nchw => [c, h, w],
            Layout::Nhwc => [h, w, c],
        }
    }

    /// Checks what serde cannot: sizes, the per-channel lists, the labels file's name.
    pub fn check(&self) -> Result<(), String> {
        let channels = self.channels();
        if !(1..=MAX_SIDE).contains(&self.width) || !(1..=MAX_SIDE).contains(&self.height) {
            return Err(format!("image width and height must be from 1 to {MAX_SIDE}"));
        }
        if self.resize == Resize::ShorterSideThenCrop && self.shorter_side() < self.width.max(self.height) {
            return Err(format!(
                "image shorter_side ({}) must be at least the larger of width and height ({}), or the crop would not fit",
                self.shorter_side(),
                self.width.max(self.height)
            ));
        }
        if self.resize == Resize::Stretch && self.shorter_side.is_some() {
            return Err("image shorter_side only applies to resize \"shorter_side_then_crop\"".into());
        }
        for (name, values) in [("mean", &self.mean), ("std", &self.std)] {
            if !(values.is_empty() || values.len() == 1 || values.len() == channels) {
                return Err(format!(
                    "image {name} has {} values; give 1 or {channels} (one per channel)",
                    values.len()
                ));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(format!("image {name} must be finite numbers"));
            }
        }
        if self.std.contains(&0.0) {
            return Err("image std must not be 0".into());
        }
        if !self.scale.is_finite() || self.scale == 0.0 {
            return Err("image scale must be a finite number other than 0".into());
        }
        if self.top_k == 0 {
            return Err("image top_k must be at least 1".into());
        }
        if let Some(Labels::File(name)) = &self.labels
            && (name.is_empty() || name.contains(['/', '\\']) || name == "." || name == "..")
        {
            return Err(format!("image labels {name:?} must be a file name beside the model, or a list"));
        }
        Ok(())
    }

    /// Channel `c`'s mean and std.
    pub fn normalisation(&self, c: usize) -> (f32, f32) {
        let pick = |values: &[f32], default| match values {
            [] => default,
            [one] => *one,
            many => many[c],
        };
        (pick(&self.mean, 0.0), pick(&self.std, 1.0))
    }
}

/// Class names from a labels file: one a line, blank lines at the end ignored.
pub fn parse_labels(text: &str) -> Vec<String> {
    let mut labels: Vec<String> = text.lines().map(|l| l.trim_end_matches('\r').to_owned()).collect();
    while labels.last().is_some_and(|l| l.trim().is_empty()) {
        labels.pop();
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ImageConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_are_torchvisions() {
        let c = config(r#"{"width": 224, "height": 224}"#);
        assert_eq!(
            (c.resize, c.color, c.layout, c.scores, c.top_k),
            (Resize::ShorterSideThenCrop, ColorOrder::Rgb, Layout::Nchw, Scores::Probabilities, 5)
        );
        assert_eq!(c.shorter_side(), 256);
        assert_eq!(c.input_shape(), [3, 224, 224]);
        assert_eq!(c.normalisation(2), (0.0, 1.0));
        c.check().unwrap();
    }

    #[test]
    fn labels_are_a_list_or_a_file_beside_the_model() {
        assert_eq!(
            config(r#"{"width": 8, "height": 8, "labels": ["a"]}"#).labels,
            Some(Labels::List(vec!["a".into()]))
        );
        assert_eq!(
            config(r#"{"width": 8, "height": 8, "labels": "labels.txt"}"#).labels,
            Some(Labels::File("labels.txt".into()))
        );
        let escape = config(r#"{"width": 8, "height": 8, "labels": "../secrets"}"#);
        assert!(escape.check().unwrap_err().contains("file name beside the model"));
        assert_eq!(parse_labels("n1 cat\r\nn2 dog\n\n"), vec!["n1 cat", "n2 dog"]);
    }

    #[test]
    fn inconsistent_settings_are_refused_with_the_reason() {
        for (json, reason) in [
            (r#"{"width": 0, "height": 8}"#, "width and height"),
            (r#"{"width": 224, "height": 224, "shorter_side": 200}"#, "crop would not fit"),
            (r#"{"width": 8, "height": 8, "resize": "stretch", "shorter_side": 9}"#, "only applies"),
            (r#"{"width": 8, "height": 8, "mean": [1, 2]}"#, "give 1 or 3"),
            (r#"{"width": 8, "height": 8, "color": "gray", "std": [1, 2, 3]}"#, "give 1 or 1"),
            (r#"{"width": 8, "height": 8, "std": [0]}"#, "must not be 0"),
            (r#"{"width": 8, "height": 8, "top_k": 0}"#, "top_k"),
        ] {
            let err = config(json).check().unwrap_err();
            assert!(err.contains(reason), "{json}: {err}");
        }
        assert!(serde_json::from_str::<ImageConfig>(r#"{"width": 8, "height": 8, "colour": "rgb"}"#).is_err());
        assert!(serde_json::from_str::<ImageConfig>(r#"{"width": 8, "height": 8, "layout": "chw"}"#).is_err());
    }
}
