//! Which format a file is in, told from its name; which format its predictions are written in;
//! and opening text (gzip included).

use std::io::{self, BufRead, BufReader, Read};

use flate2::bufread::MultiGzDecoder;

/// How rows are written in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// Delimited text: comma (`.csv`) or tab (`.tsv`) unless configured otherwise.
    Csv { delimiter: u8, has_header: bool },
    /// One JSON object (features by field name) or array (by position) per line.
    JsonLines,
    /// Apache Parquet: typed columns, read by byte ranges ([`crate::formats::parquet`]).
    Parquet,
    /// One image (`.jpg`, `.jpeg`, `.png`, `.webp`); its format is told from its bytes.
    Image,
    /// A tar archive of images (`.tar`, `.tar.gz`, `.tgz`).
    ImageArchive,
}

impl DataFormat {
    pub fn is_image(self) -> bool {
        matches!(self, DataFormat::Image | DataFormat::ImageArchive)
    }

    /// The format a table's predictions are written in: `choice` (`OUTPUT_FORMAT`), or the
    /// input's own. CSV keeps its delimiter; another format becomes comma-separated with a header.
    pub fn output(self, choice: Option<TableFormat>) -> TableFormat {
        match (choice, self) {
            (Some(choice), _) => choice,
            (None, DataFormat::Parquet) => TableFormat::Parquet,
            (None, DataFormat::Csv { .. }) => TableFormat::Csv,
            (None, _) => TableFormat::JsonLines,
        }
    }
}

/// The formats predictions are written in (`OUTPUT_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Csv,
    JsonLines,
    Parquet,
}

impl TableFormat {
    /// `csv`, `jsonl` or `parquet` (as `OUTPUT_FORMAT` takes them), or a file name's extension.
    pub fn parse(text: &str) -> Option<Self> {
        let lower = text.to_ascii_lowercase();
        let extension = lower.rsplit_once('.').map_or(lower.as_str(), |(_, ext)| ext);
        match extension {
            "csv" | "tsv" => Some(Self::Csv),
            "jsonl" | "ndjson" => Some(Self::JsonLines),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv",
            Self::JsonLines => "application/x-ndjson",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// CSV options that cannot be told from a file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvOptions {
    /// Whether CSV files start with a header row.
    pub has_header: bool,
    /// The delimiter of `.csv` files (`.tsv` files always use tabs).
    pub delimiter: u8,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self { has_header: true, delimiter: b',' }
    }
}

/// A file's format and compression, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKind {
    pub format: DataFormat,
    pub gzip: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name:?} is not a supported file type: sluice reads CSV (.csv, .tsv) and JSON Lines (.jsonl, .ndjson), optionally gzip-compressed (.gz), Parquet (.parquet), and images (.jpg, .jpeg, .png, .webp) alone or in a tar archive (.tar, .tar.gz, .tgz)"
)]
pub struct UnsupportedFile {
    pub name: String,
}

impl FileKind {
    /// The kind of `name` (a key or a path); `content_encoding` is S3's `Content-Encoding`.
    pub fn from_name(name: &str, content_encoding: Option<&str>, csv: CsvOptions) -> Result<Self, UnsupportedFile> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tgz") {
            return Ok(Self { format: DataFormat::ImageArchive, gzip: true });
        }
        let (stem, gz_suffix) = match lower.strip_suffix(".gz") {
            Some(stem) => (stem, true),
            None => (lower.as_str(), false),
        };
        let gzip = gz_suffix || content_encoding.is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
        let format = match stem.rsplit_once('.').map(|(_, ext)| ext) {
            Some("csv") => DataFormat::Csv { delimiter: csv.delimiter, has_header: csv.has_header },
            Some("tsv") => DataFormat::Csv { delimiter: b'\t', has_header: csv.has_header },
            Some("jsonl" | "ndjson") => DataFormat::JsonLines,
            Some("tar") => DataFormat::ImageArchive,
            // Parquet compresses its pages itself; a Parquet file named .gz is not one sluice reads.
            Some("parquet") if !gz_suffix => return Ok(Self { format: DataFormat::Parquet, gzip: false }),
            // An image is compressed already: an image named .gz is not one sluice reads.
            Some("jpg" | "jpeg" | "png" | "webp") if !gz_suffix => {
                return Ok(Self { format: DataFormat::Image, gzip: false });
            }
            _ => return Err(UnsupportedFile { name: name.to_owned() }),
        };
        Ok(Self { format, gzip })
    }
}

/// Opens `input` (text, or a tar archive): decompressed when it starts with the gzip magic bytes (whatever its
/// name says, since S3 clients do not always set a content encoding). `expect_gzip` only makes
/// the error clearer when a `.gz` file is not gzip.
pub fn open_text<'a>(input: impl Read + Send + 'a, expect_gzip: bool) -> io::Result<Box<dyn BufRead + Send + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, input);
    let is_gzip = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    if is_gzip {
        Ok(Box::new(BufReader::with_capacity(256 * 1024, MultiGzDecoder::new(buffered))))
    } else if expect_gzip && !buffered.fill_buf()?.is_empty() {
        Err(io::Error::new(io::ErrorKind::InvalidData, "the file is named .gz but is not gzip-compressed"))
    } else {
        Ok(Box::new(buffered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn kind(name: &str) -> Result<FileKind, UnsupportedFile> {
        FileKind::from_name(name, None, CsvOptions::default())
    }

    #[test]
    fn names_tell_format_and_compression() {
        assert_eq!(
            kind("a/b.csv").unwrap(),
            FileKind { format: DataFormat::Csv { delimiter: b',', has_header: true }, gzip: false }
        );
        assert_eq!(
            kind("B.TSV.GZ").unwrap(),
            FileKind { format: DataFormat::Csv { delimiter: b'\t', has_header: true }, gzip: true }
        );
        assert_eq!(kind("x.jsonl").unwrap().format, DataFormat::JsonLines);
        assert_eq!(kind("x.ndjson.gz").unwrap(), FileKind { format: DataFormat::JsonLines, gzip: true });
        assert!(FileKind::from_name("x.csv", Some("gzip"), CsvOptions::default()).unwrap().gzip);
        assert_eq!(kind("cats/Kitten.JPG").unwrap(), FileKind { format: DataFormat::Image, gzip: false });
        assert_eq!(kind("x.webp").unwrap().format, DataFormat::Image);
        // S3's content encoding says nothing about an image's own bytes.
        assert!(!FileKind::from_name("x.png", Some("gzip"), CsvOptions::default()).unwrap().gzip);
        assert_eq!(kind("photos.tar").unwrap(), FileKind { format: DataFormat::ImageArchive, gzip: false });
        assert_eq!(kind("photos.tar.gz").unwrap(), FileKind { format: DataFormat::ImageArchive, gzip: true });
        assert_eq!(kind("photos.TGZ").unwrap(), FileKind { format: DataFormat::ImageArchive, gzip: true });
        assert_eq!(kind("sales/2026-12.PARQUET").unwrap(), FileKind { format: DataFormat::Parquet, gzip: false });
        assert!(!FileKind::from_name("x.parquet", Some("gzip"), CsvOptions::default()).unwrap().gzip);
        for bad in ["x.parquet.gz", "x.gz", "README", "x.json", "x.csv.zip", "x.jpg.gz", "x.gif", "x.zip"] {
            assert!(kind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outputs_follow_the_input_unless_chosen() {
        let csv = DataFormat::Csv { delimiter: b';', has_header: true };
        assert_eq!(csv.output(None), TableFormat::Csv);
        assert_eq!(DataFormat::JsonLines.output(None), TableFormat::JsonLines);
        assert_eq!(DataFormat::Parquet.output(None), TableFormat::Parquet);
        assert_eq!(DataFormat::Parquet.output(Some(TableFormat::Csv)), TableFormat::Csv);
        assert_eq!(TableFormat::parse("out/preds.PARQUET"), Some(TableFormat::Parquet));
        assert_eq!(TableFormat::parse("jsonl"), Some(TableFormat::JsonLines));
        assert_eq!(TableFormat::parse("xlsx"), None);
    }

    #[test]
    fn gzip_is_recognised_by_its_magic_bytes() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"x\n1\n").unwrap();
        let gz = gz.finish().unwrap();
        let mut text = String::new();
        open_text(&gz[..], false).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "x\n1\n");
        let mut plain = String::new();
        open_text(&b"x\n1\n"[..], false).unwrap().read_to_string(&mut plain).unwrap();
        assert_eq!(plain, "x\n1\n");
        assert!(open_text(&b"x\n1\n"[..], true).is_err());
    }
}
