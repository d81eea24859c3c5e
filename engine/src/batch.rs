//! A mini-batch: the parsed rows of one model run, and the rows rejected on the way.

/// Fields appended one after another, row by row, in one buffer.
#[derive(Debug, Default, Clone)]
pub struct FieldStore {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    pub fn mark(&self) -> RowMark {
        RowMark([self.features.len(), self.doubles.len(), self.integers.len(), self.text.len()])
    }

    /// The model's inputs (features and typed columns), taken out; the rest (pass-through
    /// fields, bad rows) stays for formatting the answer.
    pub fn take_inputs(&mut self) -> Batch {
        Batch {
            rows: self.rows,
            features: std::mem::take(&mut self.features),
            doubles: std::mem::take(&mut self.doubles),
            integers: std::mem::take(&mut self.integers),
            text: std::mem::take(&mut self.text),
            ..Batch::default()
        }
    }

    /// Drops every value pushed since `mark`.
    pub fn undo(&mut self, RowMark([features, doubles, integers, text]): RowMark) {
        self.features.truncate(features);
        self.doubles.truncate(doubles);
        self.integers.truncate(integers);
        self.text.truncate(text);
    }
}

impl FieldStore {
    pub fn push(&mut self, field: &[u8]) {
        self.data.extend_from_slice(field);
        self.ends.push(self.data.len());
    }

    /// Appends a field built in place by `write`.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.data);
        self.ends.push(self.data.len());
    }

    /// Drops the fields after the first `len` (to undo a row that turned out bad).
    pub fn truncate(&mut self, len: usize) {
        self.ends.truncate(len);
        self.data.truncate(self.ends.last().copied().unwrap_or(0));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.data[start..self.ends[index]]
    }
}

/// Where a row's values start in each buffer, to undo the row when it turns out bad.
#[derive(Debug, Clone, Copy)]
pub struct RowMark([usize; 4]);

/// A row that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// The line it starts on, counted from 1 (the header, if any, is line 1).
    pub line: u64,
    pub reason: String,
    /// The row as it was (re-quoted for CSV).
    pub raw: String,
}

/// Parsed rows waiting for the model, in input order.
#[derive(Debug, Default)]
pub struct Batch {
    /// `rows * n_features` values, row-major (for a model of column inputs: its float columns).
    pub features: Vec<f32>,
    /// A model of column inputs' other columns, each kind row-major: float64, int64 and text.
    pub doubles: Vec<f64>,
    pub integers: Vec<i64>,
    pub text: FieldStore,
    /// `rows * passthrough columns` fields, row-major (text inputs).
    pub passthrough: FieldStore,
    /// The pass-through columns of the good rows, typed (Parquet inputs).
    pub columns: Option<arrow_array::RecordBatch>,
    /// Good rows.
    pub rows: usize,
    /// Good and bad rows read into this batch.
    pub rows_read: u64,
    pub bad: Vec<BadRow>,
}
