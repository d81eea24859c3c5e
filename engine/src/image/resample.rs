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

/// Resizes `pixels` (`width` x `height`, `C` interleaved 8-bit values a pixel).
pub fn resize<const C: usize>(
    pixels: &[u8],
    width: usize,
    height: usize,
    out_width: usize,
    out_height: usize,
) -> Vec<u8> {
    let vertical = Coefficients::new(height, out_height);
    // The rows the vertical pass reads.
    let first_row = vertical.bounds[0].0;
    let last_row = vertical.bounds[out_height - 1].0 + vertical.bounds[out_height - 1].1;
    let (source, offset) = if out_width != width {
        let rows = &pixels[first_row * width * C..last_row * width * C];
        (std::borrow::Cow::Owned(horizontal_pass::<C>(rows, width, out_width)), first_row)
    } else {
        (std::borrow::Cow::Borrowed(pixels), 0)
    };
    if out_height == height {
        return source.into_owned();
    }
    vertical_pass(&source, out_width * C, offset, &vertical)
}

/// Each row of `rows` from `width` to `out_width` pixels.
fn horizontal_pass<const C: usize>(rows: &[u8], width: usize, out_width: usize) -> Vec<u8> {
    let horizontal = Coefficients::new(width, out_width);
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; rows.len() / width * out_width];
    for (row, out_row) in rows.chunks_exact(width * C).zip(out.chunks_exact_mut(out_width * C)) {
        for (xx, out) in out_row.chunks_exact_mut(C).enumerate() {
            let (start, weights) = horizontal.of(xx);
            let mut sums = [half; C];
            for (pixel, &w) in row[start * C..].chunks_exact(C).zip(weights) {
                for c in 0..C {
                    sums[c] += pixel[c] as i32 * w;
                }
            }
            for c in 0..C {
                out[c] = clip8(sums[c]);
            }
        }
    }
    out
}

/// The output rows, each a weighted sum of whole input rows (`rows` starts at input row
/// `offset`): row-wise, so the compiler vectorises it.
fn vertical_pass(rows: &[u8], row_len: usize, offset: usize, vertical: &Coefficients) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; vertical.bounds.len() * row_len];
    let mut sums = vec![0i32; row_len];
    for (yy, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        let (start, weights) = vertical.of(yy);
        sums.fill(half);
        for (y, &w) in weights.iter().enumerate() {
            let row = &rows[(start - offset + y) * row_len..][..row_len];
            for (sum, &p) in sums.iter_mut().zip(row) {
                *sum += p as i32 * w;
            }
        }
        for (value, &sum) in out_row.iter_mut().zip(&sums) {
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
        assert_eq!(resize::<3>(&pixels, 2, 2, 2, 2), pixels);
    }

    #[test]
    fn halving_averages_as_pillow_does() {
        // Pillow: Image.frombytes("L", (4, 1), bytes([0, 100, 200, 255])).resize((2, 1), BILINEAR)
        // gives [71, 209]: the first output reads the first three inputs, weighted 3:3:1.
        assert_eq!(resize::<1>(&[0, 100, 200, 255], 4, 1, 2, 1), [71, 209]);
        // Two rows: the vertical pass only.
        assert_eq!(resize::<1>(&[0, 255], 1, 2, 1, 1), [128]);
    }
}
