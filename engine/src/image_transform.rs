//! Image jobs: one image to its top k as JSON, or a tar archive of images to JSON Lines (one line
//! per image, in archive order; bad images to the errors file, within the bad-row ratio).
//! Archive members are decoded, preprocessed and run on all the task's cores.

use std::io::{self, Read, Write};

use super::batch::BadRow;
use super::formats::open_text;
use super::image::ImageModel;
use super::image::decode::{ImageError, MAX_ENCODED_BYTES};
use super::model::Model;
use super::parallel::ordered_map;
use super::rejects::ErrorWriter;
use super::{TransformError, TransformOptions, TransformSummary};

/// The errors file's header for archives: the image's position in the archive (from 1), why,
/// and its path.
const IMAGE_ERROR_HEADER: [&str; 3] = ["image", "reason", "path"];

/// One image: `output` gets `[{"class": …, "probability": …}, …]` and a newline.
pub fn transform_one(
    input: impl Read,
    mut output: impl Write,
    model: &Model,
    image: &ImageModel,
    options: &TransformOptions,
) -> Result<TransformSummary, TransformError> {
    let mut encoded = Vec::new();
    input.take(MAX_ENCODED_BYTES + 1).read_to_end(&mut encoded)?;
    if encoded.is_empty() {
        return Err(TransformError::Empty);
    }
    if encoded.len() as u64 > MAX_ENCODED_BYTES {
        return Err(TransformError::Image(ImageError::TooLarge {
            size: encoded.len() as u64,
            limit: MAX_ENCODED_BYTES,
        }));
    }
    let line = classify(&encoded, model, image, options.max_image_pixels, &mut Worker::default(), None).map_err(
        |e| match e {
            Failure::Image(error) => TransformError::Image(error),
            Failure::Model(error) => error,
        },
    )?;
    output.write_all(&line)?;
    output.flush()?;
    Ok(TransformSummary { rows_in: 1, rows_out: 1, ..TransformSummary::default() })
}

/// A tar archive (gzip-compressed or not) of images: `output` gets
/// `{"image": "<path>", "predictions": [...]}` per image, in archive order.
#[allow(clippy::too_many_arguments)]
pub fn transform_archive(
    input: impl Read + Send,
    gzip: bool,
    mut output: impl Write,
    errors: impl Write,
    model: &Model,
    image: &ImageModel,
    options: &TransformOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<TransformSummary, TransformError> {
    let mut errors = ErrorWriter::new(errors, IMAGE_ERROR_HEADER);
    let mut summary = TransformSummary::default();
    ordered_map(
        options.threads,
        |emit| read_members(input, gzip, emit),
        |worker: &mut Worker, member: Member| {
            let result = match member.content {
                Ok(encoded) => classify(&encoded, model, image, options.max_image_pixels, worker, Some(&member.path)),
                Err(error) => Err(Failure::Image(error)),
            };
            match result {
                Ok(line) => Ok(Ok(line)),
                Err(Failure::Image(error)) => {
                    Ok(Err(BadRow { line: member.number, reason: error.to_string(), raw: member.path }))
                }
                Err(Failure::Model(error)) => Err(error),
            }
        },
        |result| {
            summary.rows_in += 1;
            match result {
                Ok(line) => {
                    output.write_all(&line)?;
                    summary.rows_out += 1;
                }
                Err(bad) => errors.write(&bad)?,
            }
            progress(summary.rows_in);
            Ok(())
        },
    )?;
    output.flush()?;
    if summary.rows_in == 0 {
        return Err(TransformError::NoImages);
    }
    errors.finish(summary, options, true)
}

/// A member of the archive, read.
struct Member {
    /// Its position among the archive's images, from 1.
    number: u64,
    path: String,
    content: Result<Vec<u8>, ImageError>,
}

/// Hands each regular file of the archive to `emit`, in archive order. Directories, links and
/// macOS's `._*` / `.DS_Store` companions are not images and are passed over.
fn read_members(
    input: impl Read + Send,
    gzip: bool,
    emit: &mut dyn FnMut(Member) -> bool,
) -> Result<(), TransformError> {
    let unreadable = |e: io::Error| {
        TransformError::Io(io::Error::new(io::ErrorKind::InvalidData, format!("the archive cannot be read: {e}")))
    };
    let mut archive = tar::Archive::new(open_text(input, gzip)?);
    let mut number = 0;
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(unreadable)?.to_string_lossy().into_owned();
        let name = path.rsplit('/').next().unwrap_or_default();
        if name.starts_with("._") || name == ".DS_Store" {
            continue;
        }
        number += 1;
        let size = entry.size();
        let content = if size > MAX_ENCODED_BYTES {
            Err(ImageError::TooLarge { size, limit: MAX_ENCODED_BYTES })
        } else {
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(unreadable)?;
            Ok(bytes)
        };
        if !emit(Member { number, path, content }) {
            break;
        }
    }
    Ok(())
}

/// A thread's reused buffer.
#[derive(Default)]
struct Worker {
    input: Vec<f32>,
}

enum Failure {
    /// The image's own fault.
    Image(ImageError),
    /// The model's: every image would fail the same way.
    Model(TransformError),
}

/// Decodes, preprocesses and runs one image; its output line, with `path` for an archive member.
fn classify(
    encoded: &[u8],
    model: &Model,
    image: &ImageModel,
    max_pixels: u64,
    worker: &mut Worker,
    path: Option<&str>,
) -> Result<Vec<u8>, Failure> {
    worker.input.clear();
    image.preprocess.run(encoded, max_pixels, &mut worker.input).map_err(Failure::Image)?;
    let outputs = model.predict(&worker.input, 1).map_err(|e| Failure::Model(e.into()))?;
    let top = image.top_k(&outputs, 0);
    let mut line = Vec::with_capacity(64 + 64 * top.len());
    if let Some(path) = path {
        line.extend_from_slice(b"{\"image\":");
        serde_json::to_writer(&mut line, path).map_err(|e| Failure::Model(TransformError::Io(e.into())))?;
        line.extend_from_slice(b",\"predictions\":");
        image.classifier.write_json(&top, &mut line);
        line.push(b'}');
    } else {
        image.classifier.write_json(&top, &mut line);
    }
    line.push(b'\n');
    Ok(line)
}
