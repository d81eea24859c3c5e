//! Encoded bytes to pixels: JPEG, PNG and WebP (told from the bytes, not the name), turned
//! upright by their EXIF orientation, refused above a pixel limit before any pixel is decoded.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Why an image could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("not an image: sluice reads JPEG, PNG and WebP")]
    NotAnImage,
    #[error("{0} images are not supported: sluice reads JPEG, PNG and WebP")]
    Unsupported(String),
    #[error(
        "the image is {width}x{height}, {} pixels, more than the limit of {limit} (MAX_IMAGE_PIXELS)",
        *width as u64 * *height as u64
    )]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the image is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("the image cannot be decoded: {0}")]
    Corrupt(String),
}

/// The default of `MAX_IMAGE_PIXELS`: 50 megapixels, more than phone cameras take.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;

/// The largest encoded image read (a single image's file, or one member of an archive).
pub const MAX_ENCODED_BYTES: u64 = 256 << 20;

/// Whether a JPEG stops before its end-of-image marker. The JPEG decoder fills a cut-off image
/// with grey rather than failing (as libjpeg does unless told otherwise); sluice refuses it, as
/// Pillow does. Entropy-coded data cannot hold the marker, so the last scan (start-of-scan
/// marker) must be followed by one.
fn truncated_jpeg(bytes: &[u8]) -> bool {
    let marker = |m: u8| move |w: &[u8]| w[0] == 0xFF && w[1] == m;
    match bytes.windows(2).rposition(marker(0xDA)) {
        Some(last_scan) => !bytes[last_scan..].windows(2).any(marker(0xD9)),
        None => true,
    }
}

/// Decodes `bytes`, upright.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, ImageError> {
    let corrupt = |e: image::ImageError| ImageError::Corrupt(e.to_string());
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ImageError::Corrupt(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Jpeg) if truncated_jpeg(bytes) => {
            return Err(ImageError::Corrupt("the JPEG is truncated: its last scan has no end-of-image marker".into()));
        }
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => {}
        Some(other) => {
            let name = other.extensions_str().first().copied().unwrap_or("these");
            return Err(ImageError::Unsupported(name.to_ascii_uppercase()));
        }
        None => return Err(ImageError::NotAnImage),
    }
    // The decoders check their allocations against this too; the pixel check below comes first.
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if width as u64 * height as u64 > max_pixels {
        return Err(ImageError::TooManyPixels { width, height, limit: max_pixels });
    }
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt("it has no pixels".into()));
    }
    // A broken EXIF block leaves the image as stored rather than failing it.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    Ok(image)
}
