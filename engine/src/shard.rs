//! A shard of a text file: the rows that *start* inside a byte range `[start, end)`.
//!
//! The rule is Hadoop's line reader's. A shard that does not begin at the file's start reads
//! from the byte before its range and drops everything up to and including the first line
//! break: that partial line belongs to the shard before it, and a line that starts exactly at
//! `start` (the byte before is a break) is kept. It then passes on whole lines while they start
//! before `end`, reading past `end` to finish the last one. Every row of the file so belongs to
//! exactly one shard, whatever the ranges: a range inside one long row owns nothing, CRLF ends
//! lines as LF does, and the last line needs no break.
//!
//! Splitting is only safe when a line break always ends a row. [`OwnedRows`] refuses, with an
//! [`Unsplittable`] error, what it can see is not so: a gzip stream, and (for CSV) a line with an
//! odd number of double quotes, which a quoted field holding a line break always leaves somewhere
//! in the file (on its first line). A file whose lines all have an even number never has a break
//! inside quotes, so each shard checking the lines it owns checks the whole file.

use std::io::{self, BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Why a file must be processed whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsplittable {
    #[error("it is gzip-compressed: a gzip stream can only be read from its start")]
    Gzip,
    #[error(
        "a quoted field holds a line break (line {line} of its shard has an odd number of double quotes), so rows cannot be found from the middle of the file"
    )]
    QuotedLineBreak { line: u64 },
    #[error("it is a Parquet file of one row group, and a row group is the smallest part of a Parquet file read alone")]
    OneRowGroup,
}

impl Unsplittable {
    /// The reason inside an I/O error from [`OwnedRows`], however the engine passed it on.
    pub fn from_io(error: &io::Error) -> Option<&Unsplittable> {
        error.get_ref().and_then(|inner| inner.downcast_ref::<Unsplittable>())
    }

    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// Where a shard's reading starts: the byte before its range (0 for the first shard).
pub fn read_from(start: u64) -> u64 {
    start.saturating_sub(1)
}

/// The lines a shard owned, counted as a person counts them; readable after the reader is gone.
#[derive(Debug, Clone, Default)]
pub struct LineCount(Arc<AtomicU64>);

impl LineCount {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Dropping the partial line that the shard before owns.
    Skipping,
    /// At the first byte of a line.
    LineStart,
    InLine,
    Done,
}

/// The bytes of the rows a shard owns, from a reader of the file starting at [`read_from`].
pub struct OwnedRows<R> {
    input: R,
    /// The file offset of the next byte of `buffer`.
    position: u64,
    end: u64,
    state: State,
    check_quotes: bool,
    /// Whether the current line has an odd number of double quotes so far.
    odd_quotes: bool,
    lines: LineCount,
    buffer: Box<[u8]>,
    filled: usize,
    consumed: usize,
}

impl<R: Read> OwnedRows<R> {
    /// The rows starting in `[start, end)`; `input` reads the file from `read_from(start)`.
    /// `csv` turns on the quoted-line-break check.
    pub fn new(input: R, start: u64, end: u64, csv: bool) -> (Self, LineCount) {
        let lines = LineCount::default();
        let rows = Self {
            input,
            position: read_from(start),
            end,
            state: if start == 0 { State::LineStart } else { State::Skipping },
            check_quotes: csv,
            odd_quotes: false,
            lines: lines.clone(),
            buffer: vec![0; 64 * 1024].into_boxed_slice(),
            filled: 0,
            consumed: 0,
        };
        (rows, lines)
    }

    /// Refills the buffer when it is used up; `false` at the end of the input.
    fn fill(&mut self) -> io::Result<bool> {
        if self.consumed < self.filled {
            return Ok(true);
        }
        let at_file_start = self.position == 0 && self.filled == 0;
        self.filled = loop {
            match self.input.read(&mut self.buffer) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.consumed = 0;
        if at_file_start && self.buffer[..self.filled].starts_with(&GZIP_MAGIC) {
            return Err(Unsplittable::Gzip.into_io());
        }
        Ok(self.filled > 0)
    }

    /// Moves past `n` bytes of the buffer.
    fn advance(&mut self, n: usize) {
        self.consumed += n;
        self.position += n as u64;
    }

    fn line_ended(&mut self) -> io::Result<()> {
        self.state = State::LineStart;
        if std::mem::take(&mut self.odd_quotes) {
            self.state = State::Done;
            return Err(Unsplittable::QuotedLineBreak { line: self.lines.get() }.into_io());
        }
        Ok(())
    }
}

impl<R: Read> Read for OwnedRows<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::LineStart if self.position >= self.end => {
                    self.state = State::Done;
                    return Ok(0);
                }
                _ => {}
            }
            if !self.fill()? {
                // The file ended: a last line without a break is still a line.
                let in_line = self.state == State::InLine;
                self.state = State::Done;
                if in_line && std::mem::take(&mut self.odd_quotes) {
                    return Err(Unsplittable::QuotedLineBreak { line: self.lines.get() }.into_io());
                }
                return Ok(0);
            }
            let available = &self.buffer[self.consumed..self.filled];
            let newline = available.iter().position(|&b| b == b'\n');
            match self.state {
                State::Skipping => match newline {
                    Some(i) => {
                        self.advance(i + 1);
                        self.state = State::LineStart;
                    }
                    None => self.advance(available.len()),
                },
                State::LineStart => {
                    self.lines.0.fetch_add(1, Ordering::Relaxed);
                    self.state = State::InLine;
                }
                State::InLine => {
                    let line_end = newline.map_or(available.len(), |i| i + 1);
                    let n = line_end.min(out.len());
                    out[..n].copy_from_slice(&available[..n]);
                    if self.check_quotes {
                        let quotes = available[..n].iter().filter(|&&b| b == b'"').count();
                        self.odd_quotes ^= quotes % 2 == 1;
                    }
                    self.advance(n);
                    if newline.is_some() && n == line_end {
                        self.line_ended()?;
                    }
                    return Ok(n);
                }
                State::Done => unreachable!("returned above"),
            }
        }
    }
}

/// The file's first row, as a shard needs it to read its own rows as the whole file would: the
/// header (or, without one, the first row's width) of CSV, and the first object or array of JSON
/// Lines. Empty lines (or, for JSON Lines, blank ones) before it are passed over, as the readers
/// do. `None` when the file has no row at all.
pub fn first_row_line(mut input: impl BufRead, json_lines: bool) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        if std::mem::take(&mut first) && line.starts_with(&GZIP_MAGIC) {
            return Err(Unsplittable::Gzip.into_io());
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let blank = if json_lines { text.iter().all(u8::is_ascii_whitespace) } else { text.is_empty() };
        if blank {
            continue;
        }
        if !json_lines && text.iter().filter(|&&b| b == b'"').count() % 2 == 1 {
            return Err(Unsplittable::QuotedLineBreak { line: 1 }.into_io());
        }
        return Ok(Some(text.to_vec()));
    }
}

/// Appends a shard's errors file (`line,reason,row`, its lines counted from its own first) to
/// the file's, `out`, with whole-file line numbers: `lines_before` are the lines the earlier
/// shards owned. The header is written by the caller, once.
pub fn append_errors<W: io::Write>(errors: impl Read, lines_before: u64, out: &mut csv::Writer<W>) -> io::Result<()> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(errors);
    let mut record = csv::ByteRecord::new();
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    while reader.read_byte_record(&mut record).map_err(|e| invalid(format!("a shard's errors file: {e}")))? {
        let line = std::str::from_utf8(&record[0])
            .ok()
            .and_then(|line| line.parse::<u64>().ok())
            .ok_or_else(|| invalid(format!("a shard's errors file has {:?} for a line number", &record[0])))?;
        let line = itoa::Buffer::new().format(line + lines_before).as_bytes().to_vec();
        out.write_record([line.as_slice(), &record[1], &record[2]])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows `[start, end)` owns, and the lines it counted.
    fn owned(file: &[u8], start: u64, end: u64, csv: bool) -> io::Result<(Vec<u8>, u64)> {
        let from = read_from(start) as usize;
        // Small reads, as the network gives them.
        let input = io::BufReader::with_capacity(3, &file[from.min(file.len())..]);
        let (mut rows, lines) = OwnedRows::new(input, start, end, csv);
        let mut out = Vec::new();
        let mut chunk = [0u8; 5];
        loop {
            let n = rows.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        Ok((out, lines.get()))
    }

    /// Every split of `file` into shards of `size` bytes gives back the file, each line once.
    fn assert_partitions(file: &[u8], size: u64) {
        let len = file.len() as u64;
        let (mut joined, mut lines) = (Vec::new(), 0);
        let mut start = 0;
        while start < len {
            let end = (start + size).min(len);
            let (rows, counted) = owned(file, start, end, true).unwrap();
            joined.extend_from_slice(&rows);
            lines += counted;
            start = end;
        }
        assert_eq!(String::from_utf8_lossy(&joined), String::from_utf8_lossy(file), "shards of {size}");
        let expected = file.split(|&b| b == b'\n').count() as u64 - u64::from(file.ends_with(b"\n"));
        assert_eq!(lines, expected, "lines in shards of {size}");
    }

    #[test]
    fn every_shard_size_partitions_the_rows() {
        let files: [&[u8]; 6] = [
            b"a,b\n1,2\n3,4\n",
            b"a,b\r\n1,2\r\n3,4\r\n",
            b"a,b\n1,2\n3,4",
            b"\xEF\xBB\xBFa,b\n1,2\n\n3,4\n",
            b"x\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n",
            b"x\na-row-much-longer-than-any-shard-of-the-file,\"quoted, but on one line\"\n2\n",
        ];
        for file in files {
            for size in 1..=file.len() as u64 {
                assert_partitions(file, size);
            }
        }
    }

    #[test]
    fn a_row_straddling_the_boundary_belongs_to_the_shard_it_starts_in() {
        let file = b"h\nabc\ndef\n";
        // "abc\n" is bytes 2..6: a shard ending at 4 finishes it, the next skips its rest.
        assert_eq!(owned(file, 0, 4, true).unwrap(), (b"h\nabc\n".to_vec(), 2));
        assert_eq!(owned(file, 4, 10, true).unwrap(), (b"def\n".to_vec(), 1));
        // A range that begins exactly at a row's start owns that row.
        assert_eq!(owned(file, 6, 10, true).unwrap(), (b"def\n".to_vec(), 1));
        assert_eq!(owned(file, 2, 6, true).unwrap(), (b"abc\n".to_vec(), 1));
    }

    #[test]
    fn a_range_inside_one_row_owns_nothing() {
        let file = b"h\nthis-row-is-long\nx\n";
        assert_eq!(owned(file, 4, 9, true).unwrap(), (Vec::new(), 0));
        // The shard where it starts reads past its end to finish it.
        assert_eq!(owned(file, 2, 4, true).unwrap(), (b"this-row-is-long\n".to_vec(), 1));
    }

    #[test]
    fn the_last_line_needs_no_break_and_crlf_stays_as_it_is() {
        assert_eq!(owned(b"a\r\nb\r\nc", 3, 7, true).unwrap(), (b"b\r\nc".to_vec(), 2));
    }

    #[test]
    fn a_quoted_line_break_is_refused_by_the_shard_that_owns_its_first_line() {
        let file = b"id,text\n1,\"two\nlines\"\n2,plain\n";
        let error = owned(file, 0, 10, true).unwrap_err();
        assert_eq!(Unsplittable::from_io(&error), Some(&Unsplittable::QuotedLineBreak { line: 2 }));
        // Escaped quotes ("") come in pairs and are fine.
        assert!(owned(b"id,t\n1,\"say \"\"hi\"\"\"\n", 0, 99, true).is_ok());
        // JSON Lines are not checked: a JSON string cannot hold a raw line break.
        assert!(owned(b"{\"a\": \"\\\"\"}\n", 0, 99, false).is_ok());
    }

    #[test]
    fn gzip_is_refused_at_the_start() {
        let error = owned(b"\x1f\x8b\x08\x00rest", 0, 4, true).unwrap_err();
        assert_eq!(Unsplittable::from_io(&error), Some(&Unsplittable::Gzip));
        let error = first_row_line(&b"\x1f\x8b\x08\n"[..], false).unwrap_err();
        assert_eq!(Unsplittable::from_io(&error), Some(&Unsplittable::Gzip));
    }

    #[test]
    fn the_first_row_skips_what_the_readers_skip() {
        assert_eq!(first_row_line(&b"\n\r\na,b\r\n1,2\n"[..], false).unwrap(), Some(b"a,b".to_vec()));
        assert_eq!(first_row_line(&b"  \n{\"x\": 1}\n"[..], true).unwrap(), Some(b"{\"x\": 1}".to_vec()));
        assert_eq!(first_row_line(&b"\xEF\xBB\xBFa\n"[..], false).unwrap(), Some(b"\xEF\xBB\xBFa".to_vec()));
        assert_eq!(first_row_line(&b""[..], false).unwrap(), None);
        assert!(first_row_line(&b"\"a\nb\",c\n"[..], false).is_err());
    }

    #[test]
    fn error_lines_shift_to_the_whole_files() {
        let shard = "line,reason,row\n1,\"column \"\"x\"\" is empty\",\"1,,3\"\n4,bad,\"a\"\n";
        let mut out = csv::Writer::from_writer(Vec::new());
        out.write_record(crate::rejects::ROW_ERROR_HEADER).unwrap();
        append_errors(shard.as_bytes(), 1000, &mut out).unwrap();
        append_errors("line,reason,row\n2,short,x\n".as_bytes(), 2000, &mut out).unwrap();
        let text = String::from_utf8(out.into_inner().unwrap()).unwrap();
        assert_eq!(text, "line,reason,row\n1001,\"column \"\"x\"\" is empty\",\"1,,3\"\n1004,bad,a\n2002,short,x\n");
        let error = append_errors("line,reason,row\nx,y,z\n".as_bytes(), 0, &mut out_of(Vec::new())).unwrap_err();
        assert!(error.to_string().contains("line number"), "{error}");
    }

    fn out_of(bytes: Vec<u8>) -> csv::Writer<Vec<u8>> {
        csv::Writer::from_writer(bytes)
    }
}
