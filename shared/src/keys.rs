//! Object keys: decoding them from S3 events, and naming the outputs of an input.

use percent_encoding::percent_decode_str;

/// The suffixes of the files written for each input, SageMaker Batch Transform style.
pub const DATA_SUFFIX: &str = ".out";
/// A Parquet output's suffix: `.out` and the extension that readers' globs pick files by.
pub const PARQUET_DATA_SUFFIX: &str = ".out.parquet";
pub const REPORT_SUFFIX: &str = ".report.json";
pub const ERRORS_SUFFIX: &str = ".errors.csv";

/// A key in an S3 event that does not decode to UTF-8 text.
#[derive(Debug, thiserror::Error)]
#[error("object key {raw:?} in the S3 event is not valid form-urlencoded UTF-8")]
pub struct KeyDecodeError {
    pub raw: String,
}

/// Decodes an object key as S3 event notifications carry it: form-urlencoded, so `+` is a space
/// and `%2B` a plus sign.
pub fn decode_event_key(raw: &str) -> Result<String, KeyDecodeError> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|key| key.into_owned())
        .map_err(|_| KeyDecodeError { raw: raw.to_owned() })
}

/// The keys of everything written for one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputKeys {
    pub data: String,
    pub report: String,
    pub errors: String,
}

impl OutputKeys {
    /// `path/data.csv` with prefix `out/` gives `out/path/data.csv.out`, `.report.json` and
    /// `.errors.csv`; with `reports` (a prefix under `prefix`, such as `_reports/`) the report
    /// and errors file go under it, so that the output prefix holds predictions only.
    pub fn for_input(prefix: &str, reports: &str, input_key: &str) -> Self {
        Self {
            data: format!("{prefix}{input_key}{DATA_SUFFIX}"),
            report: format!("{prefix}{reports}{input_key}{REPORT_SUFFIX}"),
            errors: format!("{prefix}{reports}{input_key}{ERRORS_SUFFIX}"),
        }
    }

    /// The same keys for a Parquet output: `<input key>.out.parquet`.
    pub fn with_parquet_data(mut self) -> Self {
        if let Some(base) = self.data.strip_suffix(DATA_SUFFIX) {
            self.data = format!("{base}{PARQUET_DATA_SUFFIX}");
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_is_a_space_and_percent_2b_a_plus() {
        assert_eq!(decode_event_key("my+file%2B1.csv").unwrap(), "my file+1.csv");
    }

    #[test]
    fn encoded_slashes_and_plain_slashes_both_decode() {
        assert_eq!(decode_event_key("a/b%2Fc.csv").unwrap(), "a/b/c.csv");
    }

    #[test]
    fn non_ascii_keys_decode_from_utf8_bytes() {
        assert_eq!(decode_event_key("donn%C3%A9es/%E6%97%A5%E6%9C%AC.csv").unwrap(), "données/日本.csv");
    }

    #[test]
    fn plain_keys_are_unchanged() {
        assert_eq!(decode_event_key("data/iris.csv").unwrap(), "data/iris.csv");
    }

    #[test]
    fn invalid_utf8_is_an_error_naming_the_key() {
        let err = decode_event_key("bad%FF.csv").unwrap_err();
        assert!(err.to_string().contains("bad%FF.csv"));
    }

    #[test]
    fn output_keys_sit_beside_the_input_path() {
        let keys = OutputKeys::for_input("results/", "", "path/data.csv");
        assert_eq!(keys.data, "results/path/data.csv.out");
        assert_eq!(keys.report, "results/path/data.csv.report.json");
        assert_eq!(keys.errors, "results/path/data.csv.errors.csv");
        assert_eq!(OutputKeys::for_input("", "", "a.csv").data, "a.csv.out");
        let parquet = OutputKeys::for_input("results/", "", "lake/sales.parquet").with_parquet_data();
        assert_eq!(parquet.data, "results/lake/sales.parquet.out.parquet");
        assert_eq!(parquet.report, "results/lake/sales.parquet.report.json");
        // Reports and errors apart, for a table over the output prefix.
        let apart = OutputKeys::for_input("results/", "_reports/", "lake/sales.parquet").with_parquet_data();
        assert_eq!(apart.data, "results/lake/sales.parquet.out.parquet");
        assert_eq!(apart.report, "results/_reports/lake/sales.parquet.report.json");
        assert_eq!(apart.errors, "results/_reports/lake/sales.parquet.errors.csv");
    }
}
