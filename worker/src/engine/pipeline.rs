//! The transform as a pipeline over the task's cores: one thread parses rows into mini-batches,
//! `threads` threads run the model and format the results, and the calling thread writes them
//! out in input order. Channels between the stages are bounded, so memory stays bounded by the
//! batch size whatever the file size.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use shared::report::{REPORTED_ROW_ERRORS, RowError};

use super::batch::{BadRow, Batch};
use super::format::{DataFormat, FileKind, open_text};
use super::model::{Model, RUN_ROW_MULTIPLE};
use super::sinks::OutputLayout;
use super::sources::{CsvSource, JsonLinesSource, RowSource};
use super::{TransformError, TransformOptions, TransformSummary};

/// A batch's output, ready to write.
struct Formatted {
    seq: u64,
    bytes: Vec<u8>,
    rows_read: u64,
    rows_out: usize,
    bad: Vec<BadRow>,
}

/// Runs `model` over `input` (its columns mapped by `model.config`), writing predictions to
/// `output` and rejected rows to `errors` (nothing at all when every row is good). `progress`
/// hears the rows read so far.
pub fn transform(
    input: impl Read + Send,
    kind: FileKind,
    mut output: impl Write,
    errors: impl Write,
    model: &Model,
    options: &TransformOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<TransformSummary, TransformError> {
    let config = &model.config;
    let text = open_text(input, kind.gzip)?;
    let mut source: Box<dyn RowSource + '_> = match kind.format {
        DataFormat::Csv { delimiter, has_header } => {
            Box::new(CsvSource::open(text, delimiter, has_header, config, model.n_features)?)
        }
        DataFormat::JsonLines => Box::new(JsonLinesSource::open(text, config, model.n_features)?),
    };
    let layout = OutputLayout::new(kind.format, source.plan(), source.named(), model);
    output.write_all(&layout.header()?)?;

    let batch_size = options.batch_size.max(1).next_multiple_of(RUN_ROW_MULTIPLE);
    let threads = options.threads.max(1);
    let mut errors = ErrorWriter::new(errors);
    let mut summary = TransformSummary::default();

    std::thread::scope(|scope| -> Result<(), TransformError> {
        let (parsed_tx, parsed_rx) = sync_channel::<Batch>(threads);
        let parsed_rx: Arc<Mutex<Receiver<Batch>>> = Arc::new(Mutex::new(parsed_rx));
        let (done_tx, done_rx) = sync_channel::<Result<Formatted, TransformError>>(threads);

        let parser = scope.spawn(move || -> Result<(), TransformError> {
            for seq in 0.. {
                let mut batch = Batch { seq, ..Batch::default() };
                batch.features.reserve(batch_size * model.n_features);
                let more = source.fill(&mut batch, batch_size)?;
                if batch.rows_read > 0 && parsed_tx.send(batch).is_err() {
                    break; // the writer stopped: its error says why
                }
                if !more {
                    break;
                }
            }
            Ok(())
        });
        for _ in 0..threads {
            let (parsed_rx, done_tx, layout) = (parsed_rx.clone(), done_tx.clone(), &layout);
            scope.spawn(move || {
                // The last batch's output size, to allocate the next one's at once.
                let mut last_size = 0;
                loop {
                    let next = parsed_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok(batch)) = next else { break };
                    let formatted = run_batch(batch, model, layout, last_size + last_size / 8);
                    last_size = formatted.as_ref().map_or(0, |f| f.bytes.len());
                    if done_tx.send(formatted).is_err() {
                        break;
                    }
                }
            });
        }
        drop((parsed_rx, done_tx));

        let mut pending = BTreeMap::new();
        let mut next = 0;
        for formatted in done_rx {
            let formatted = formatted?;
            pending.insert(formatted.seq, formatted);
            while let Some(batch) = pending.remove(&next) {
                output.write_all(&batch.bytes)?;
                for bad in &batch.bad {
                    errors.write(bad)?;
                }
                summary.rows_in += batch.rows_read;
                summary.rows_out += batch.rows_out as u64;
                progress(summary.rows_in);
                next += 1;
            }
        }
        parser.join().map_err(|_| TransformError::Io(std::io::Error::other("the parser thread panicked")))?
    })?;
    output.flush()?;
    summary.bad_rows = errors.count;
    summary.first_errors = errors.finish()?;

    if summary.rows_in == 0 {
        return Err(TransformError::NoDataRows);
    }
    if summary.bad_rows as f64 > options.max_bad_row_ratio * summary.rows_in as f64 {
        summary.rows_out = 0;
        return Err(TransformError::TooManyBadRows { summary, limit: options.max_bad_row_ratio });
    }
    Ok(summary)
}

fn run_batch(batch: Batch, model: &Model, layout: &OutputLayout, capacity: usize) -> Result<Formatted, TransformError> {
    let mut bytes = Vec::with_capacity(capacity);
    if batch.rows > 0 {
        let predictions = model.predict(&batch.features, batch.rows)?;
        layout.format(&batch, &predictions, model, &mut bytes);
    }
    Ok(Formatted { seq: batch.seq, bytes, rows_read: batch.rows_read, rows_out: batch.rows, bad: batch.bad })
}

/// Bad rows: `line,reason,row`, the header written with the first one.
struct ErrorWriter<E: Write> {
    csv: csv::Writer<E>,
    first: Vec<RowError>,
    count: u64,
}

impl<E: Write> ErrorWriter<E> {
    fn new(errors: E) -> Self {
        Self { csv: csv::Writer::from_writer(errors), first: Vec::new(), count: 0 }
    }

    fn write(&mut self, bad: &BadRow) -> Result<(), TransformError> {
        if self.count == 0 {
            self.csv.write_record(["line", "reason", "row"])?;
        }
        self.count += 1;
        self.csv.write_record([itoa::Buffer::new().format(bad.line), bad.reason.as_str(), bad.raw.as_str()])?;
        if self.first.len() < REPORTED_ROW_ERRORS {
            self.first.push(RowError { line: bad.line, reason: bad.reason.clone() });
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<RowError>, TransformError> {
        self.csv.flush()?;
        Ok(self.first)
    }
}
