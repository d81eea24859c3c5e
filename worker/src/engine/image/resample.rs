//! Resizing as Pillow's `Image.resize(size, Image.BILINEAR)` does it, to the bit: the same
//! antialiasing filter (its support widened by the downscale factor), the same coefficients
//! rounded to the same fixed point, the horizontal pass first over only the rows the vertical
//! pass reads. Models trained on images resized by Pillow (torchvision's default) see exactly
//! the pixels they were trained on; a resizer that rounds differently moves a pixel in seven by
//! one level, and a sensitive model's probabilities by 1e-3.

/// Pillow's fixed point for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The triangle filter and its support.
fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// For each output position along one axis: the first input position it reads, and the
/// fixed-point weights of the input positions from there.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    /// `size` weights per output position.
    weights: Vec<i32>,
    size: usize,
}

impl Coefficients {
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // the bilinear filter's support is 1
        let size = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0; out_size * size];
        let mut k = vec![0.0f64; size];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero; negative starts are clamped anyway.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let mut total = 0.0;
            for (x, w) in k.iter_mut().enumerate().take(xmax) {
                *w = bilinear((x as f64 + xmin as f64 - center + 0.5) / filter_scale);
                total += *w;
            }
            for (x, w) in k.iter().enumerate().take(xmax) {
                let w = if total != 0.0 { w / total } else { *w };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                weights[xx * size + x] = if w < 0.0 { (-0.5 + fixed) as i32 } else { (0.5 + fixed) as i32 };
            }
            bounds.push((xmin, xmax));
        }
        Self { bounds, weights, size }
    }

    fn of(&self, out: usize) -> (usize, &[i32]) {
        let (start, count) = self.bounds[out];
        (start, &self.weights[out * self.size..][..count])
    }
}

fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `pixels` (`width` x `height`, `channels` interleaved 8-bit values a pixel).
pub fn resize(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    out_height: usize,
) -> Vec<u8> {
    let horizontal = Coefficients::new(width, out_width);
    let vertical = Coefficients::new(height, out_height);
    // The rows the vertical pass reads.
    let first_row = vertical.bounds[0].0;
    let last_row = vertical.bounds[out_height - 1].0 + vertical.bounds[out_height - 1].1;
    let half = 1i32 << (PRECISION_BITS - 1);

    let (source, rows, offset) = if out_width != width {
        let mut pass = vec![0u8; out_width * (last_row - first_row) * channels];
        for (y, out_row) in pass.chunks_exact_mut(out_width * channels).enumerate() {
            let row = &pixels[(y + first_row) * width * channels..][..width * channels];
            for (xx, out) in out_row.chunks_exact_mut(channels).enumerate() {
                let (start, weights) = horizontal.of(xx);
                for (c, value) in out.iter_mut().enumerate() {
                    let mut sum = half;
                    for (x, &w) in weights.iter().enumerate() {
                        sum += row[(start + x) * channels + c] as i32 * w;
                    }
                    *value = clip8(sum);
                }
            }
        }
        (std::borrow::Cow::Owned(pass), last_row - first_row, first_row)
    } else {
        (std::borrow::Cow::Borrowed(pixels), height, 0)
    };
    if out_height == height && offset == 0 && rows == height {
        return source.into_owned();
    }
    let row_len = out_width * channels;
    let mut out = vec![0u8; out_height * row_len];
    for (yy, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        let (start, weights) = vertical.of(yy);
        let start = start - offset;
        for (i, value) in out_row.iter_mut().enumerate() {
            let mut sum = half;
            for (y, &w) in weights.iter().enumerate() {
                sum += source[(start + y) * row_len + i] as i32 * w;
            }
            *value = clip8(sum);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_size_is_the_same_image() {
        let pixels: Vec<u8> = (0..12).collect();
        assert_eq!(resize(&pixels, 2, 2, 3, 2, 2), pixels);
    }

    #[test]
    fn halving_averages_as_pillow_does() {
        // Pillow: Image.frombytes("L", (4, 1), bytes([0, 100, 200, 255])).resize((2, 1), BILINEAR)
        // gives [71, 209]: the first output reads the first three inputs, weighted 3:3:1.
        assert_eq!(resize(&[0, 100, 200, 255], 4, 1, 1, 2, 1), [71, 209]);
        // Two rows: the vertical pass only.
        assert_eq!(resize(&[0, 255], 1, 2, 1, 1, 1), [128]);
    }
}
