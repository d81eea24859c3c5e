//! A decoded image to the model's input: colour order, resize (and centre crop), scale and
//! normalisation, layout. The same steps, in the same arithmetic, as the Pillow code a model
//! author checks with (`models/image_models.py`).

use image::DynamicImage;

use super::config::{ColorOrder, ImageConfig, Layout, Resize};
use super::decode::{ImageError, decode};
use super::resample::resize;

/// Decodes and preprocesses images for one model.
pub struct Preprocessor {
    pub config: ImageConfig,
    /// Per channel, the input value of each 0-255 pixel value: `(p * scale - mean) / std`,
    /// computed once, in the same float32 steps as numpy.
    lookup: Vec<[f32; 256]>,
}

impl Preprocessor {
    pub fn new(config: ImageConfig) -> Self {
        let lookup = (0..config.channels())
            .map(|c| {
                let (mean, std) = config.normalisation(c);
                std::array::from_fn(|p| (p as f32 * config.scale - mean) / std)
            })
            .collect();
        Self { config, lookup }
    }

    /// Input values per image.
    pub fn values_per_image(&self) -> usize {
        self.config.input_shape().iter().product()
    }

    /// Decodes `encoded` (refused above `max_pixels`) and appends its model input to `out`.
    pub fn run(&self, encoded: &[u8], max_pixels: u64, out: &mut Vec<f32>) -> Result<(), ImageError> {
        let image = decode(encoded, max_pixels)?;
        self.from_decoded(image, out);
        Ok(())
    }

    /// Appends the model input of an already decoded image to `out`.
    pub fn from_decoded(&self, image: DynamicImage, out: &mut Vec<f32>) {
        let c = &self.config;
        let (width, height) = (image.width(), image.height());
        let bytes = match c.color {
            ColorOrder::Gray => grey(image),
            ColorOrder::Rgb | ColorOrder::Bgr => image.into_rgb8().into_raw(),
        };
        let (resized_width, resized_height) = match c.resize {
            Resize::Stretch => (c.width, c.height),
            Resize::ShorterSideThenCrop => shorter_side_to(width, height, c.shorter_side()),
        };
        let resized = if (resized_width, resized_height) == (width, height) {
            bytes
        } else {
            let (w, h) = (resized_width as usize, resized_height as usize);
            match c.color {
                ColorOrder::Gray => resize::<1>(&bytes, width as usize, height as usize, w, h),
                ColorOrder::Rgb | ColorOrder::Bgr => resize::<3>(&bytes, width as usize, height as usize, w, h),
            }
        };
        // torchvision's CenterCrop: offsets rounded half to even, as Python's round() does.
        let left = ((resized_width - c.width) as f64 / 2.0).round_ties_even() as usize;
        let top = ((resized_height - c.height) as f64 / 2.0).round_ties_even() as usize;
        self.write_input(&resized, resized_width as usize, left, top, out);
    }

    /// The `width` x `height` window at (`left`, `top`) of `pixels` (`row_width` wide), as input
    /// values in the model's channel order and layout.
    fn write_input(&self, pixels: &[u8], row_width: usize, left: usize, top: usize, out: &mut Vec<f32>) {
        let c = &self.config;
        let (width, height, channels) = (c.width as usize, c.height as usize, c.channels());
        let start = out.len();
        out.resize(start + width * height * channels, 0.0);
        let out = &mut out[start..];
        // The pixel channel that feeds each input channel.
        let source_channel = |ch: usize| if c.color == ColorOrder::Bgr { channels - 1 - ch } else { ch };
        for y in 0..height {
            let row = &pixels[((top + y) * row_width + left) * channels..][..width * channels];
            for ch in 0..channels {
                let lookup = &self.lookup[ch];
                let from = source_channel(ch);
                match c.layout {
                    Layout::Nchw => {
                        let plane = &mut out[(ch * height + y) * width..][..width];
                        for (x, value) in plane.iter_mut().enumerate() {
                            *value = lookup[row[x * channels + from] as usize];
                        }
                    }
                    Layout::Nhwc => {
                        for x in 0..width {
                            out[(y * width + x) * channels + ch] = lookup[row[x * channels + from] as usize];
                        }
                    }
                }
            }
        }
    }
}

/// The size with the shorter side `short` and the aspect ratio kept (the longer side truncated),
/// as torchvision's `Resize(short)` computes it.
fn shorter_side_to(width: u32, height: u32, short: u32) -> (u32, u32) {
    let long = |long_side: u32, short_side: u32| (short as u64 * long_side as u64) as f64 / short_side as f64;
    if width <= height { (short, long(height, width) as u32) } else { (long(width, height) as u32, short) }
}

/// One grey channel. Colour images get Pillow's `convert("L")` luma (ITU-R 601-2, in its fixed
/// point), not the Rec. 709 weights of the image crate, so models trained on Pillow's grey see
/// the same values.
fn grey(image: DynamicImage) -> Vec<u8> {
    if !image.color().has_color() {
        return image.into_luma8().into_raw();
    }
    image
        .into_rgb8()
        .pixels()
        .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, RgbImage};

    fn config(json: &str) -> ImageConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_shorter_side_is_resized_as_torchvision_does() {
        assert_eq!(shorter_side_to(640, 427, 256), (383, 256));
        assert_eq!(shorter_side_to(427, 640, 256), (256, 383));
        assert_eq!(shorter_side_to(300, 300, 256), (256, 256));
    }

    #[test]
    fn layout_channel_order_and_normalisation() {
        // A 2x1 image: red then blue.
        let image = DynamicImage::ImageRgb8(RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 0, 255]).unwrap());
        let run = |json: &str| {
            let mut out = Vec::new();
            Preprocessor::new(config(json)).from_decoded(image.clone(), &mut out);
            out
        };
        let base = r#""width": 2, "height": 1, "resize": "stretch", "scale": 1"#;
        assert_eq!(run(&format!("{{{base}}}")), [255.0, 0.0, 0.0, 0.0, 0.0, 255.0]);
        assert_eq!(run(&format!("{{{base}, \"layout\": \"nhwc\"}}")), [255.0, 0.0, 0.0, 0.0, 0.0, 255.0]);
        assert_eq!(run(&format!("{{{base}, \"color\": \"bgr\"}}")), [0.0, 255.0, 0.0, 0.0, 255.0, 0.0]);
        assert_eq!(
            run(&format!("{{{base}, \"color\": \"bgr\", \"layout\": \"nhwc\"}}")),
            [0.0, 0.0, 255.0, 255.0, 0.0, 0.0]
        );
        assert_eq!(
            run(&format!("{{{base}, \"mean\": [255, 0, 0], \"std\": [255, 1, 0.5]}}")),
            [0.0, -1.0, 0.0, 0.0, 0.0, 510.0]
        );
        // Pillow's luma: red is 76, blue 29.
        assert_eq!(run(&format!("{{{base}, \"color\": \"gray\"}}")), [76.0, 29.0]);
    }

    #[test]
    fn the_centre_is_cropped_after_the_resize() {
        // 4x2 grey, columns 0, 1, 2, 3: the shorter side is already 2, so the crop takes the
        // middle two columns.
        let image = DynamicImage::ImageLuma8(GrayImage::from_raw(4, 2, vec![0, 1, 2, 3, 0, 1, 2, 3]).unwrap());
        let mut out = Vec::new();
        let config = config(r#"{"width": 2, "height": 2, "shorter_side": 2, "color": "gray", "scale": 1}"#);
        Preprocessor::new(config).from_decoded(image, &mut out);
        assert_eq!(out, [1.0, 2.0, 1.0, 2.0]);
    }
}
