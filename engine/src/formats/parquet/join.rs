//! One Parquet file from several of one schema, without re-encoding a row: the parts' row groups
//! copied one after the other, and a new footer that points at them where they now are.
//!
//! A Parquet file is `PAR1`, its row groups' column chunks, then (optionally) its page indexes,
//! the file metadata, the metadata's length and `PAR1` again. Every position in the metadata
//! is from the file's start, so a part's row groups moved by `shift` bytes keep their bytes and
//! only their metadata changes: the column chunks' page offsets, the row group's offset and
//! ordinal, and the offset index's page locations. The column indexes (pages' minimums and
//! maximums) hold no positions and are kept as they are.
//!
//! [`join`] is pure: it takes the parts' footers and says which bytes of each part to copy, in
//! order, and what footer follows them. The worker copies the bytes inside S3.

use std::io::Write;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use parquet::errors::ParquetError;
use parquet::file::metadata::page_index::PageIndexBuilder;
use parquet::file::metadata::{
    ColumnChunkMetaData, FileMetaData, PageIndexPolicy, ParquetMetaData, ParquetMetaDataBuilder, ParquetMetaDataReader,
    ParquetMetaDataWriter, RowGroupMetaData,
};
use parquet::file::writer::TrackedWrite;

use super::RangeRead;
use super::ranges::File;
use crate::TransformError;

/// The magic bytes that start (and end) every Parquet file.
pub const MAGIC: &[u8; 4] = b"PAR1";

/// The parts of a joined file: `MAGIC`, then bytes `rows[i]` of each part `i` in order, then
/// `footer`.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub rows: Vec<Range<u64>>,
    pub footer: Bytes,
}

impl Joined {
    /// The joined file's size.
    pub fn size(&self) -> u64 {
        MAGIC.len() as u64 + self.rows.iter().map(|r| r.end - r.start).sum::<u64>() + self.footer.len() as u64
    }
}

/// A part's footer, with its page indexes when it has them.
pub fn read_footer(file: Arc<dyn RangeRead>) -> Result<ParquetMetaData, TransformError> {
    let file = File::new(file);
    ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Optional).parse_and_finish(&file).map_err(
        |e| match file.take_failure() {
            Some(io) => TransformError::Io(io),
            None => TransformError::Parquet(format!("a part's footer cannot be read: {e}")),
        },
    )
}

/// The bytes to copy from each part (whose footers are `parts`, in order) and the footer that
/// follows them; see the module documentation. The parts must share one schema.
pub fn join(parts: &[ParquetMetaData]) -> Result<Joined, TransformError> {
    let wrong = |what: String| TransformError::Parquet(format!("the parts cannot be joined: {what}"));
    let first = parts.first().ok_or_else(|| wrong("there are none".into()))?.file_metadata();
    let columns = first.schema_descr().num_columns();
    let row_group_count = parts.iter().map(ParquetMetaData::num_row_groups).sum();
    let mut indexes = PageIndexBuilder::try_new(row_group_count, columns).map_err(|e| wrong(e.to_string()))?;
    let mut row_groups = Vec::with_capacity(row_group_count);
    let mut rows = Vec::with_capacity(parts.len());
    // Where the next part's row groups start in the joined file.
    let mut at = MAGIC.len() as u64;
    for (number, part) in parts.iter().enumerate() {
        if part.file_metadata().schema() != first.schema() {
            return Err(wrong(format!("part {number}'s schema differs from part 0's")));
        }
        let end = rows_end(part);
        let shift = at as i64 - MAGIC.len() as i64;
        for (index, row_group) in part.row_groups().iter().enumerate() {
            let ordinal = row_groups.len();
            row_groups.push(shifted_row_group(row_group, shift, ordinal).map_err(|e| wrong(e.to_string()))?);
            let Some(page_index) = part.page_index() else { continue };
            for column in 0..columns {
                if let Some(column_index) = page_index.column_index(index, column) {
                    indexes
                        .try_put_column_index(column_index.clone(), ordinal, column)
                        .map_err(|e| wrong(e.to_string()))?;
                }
                if let Some(offset_index) = page_index.offset_index(index, column) {
                    let mut offset_index = offset_index.clone();
                    for page in &mut offset_index.page_locations {
                        page.offset += shift;
                    }
                    indexes.try_put_offset_index(offset_index, ordinal, column).map_err(|e| wrong(e.to_string()))?;
                }
            }
        }
        rows.push(MAGIC.len() as u64..end);
        at += end - MAGIC.len() as u64;
    }
    let num_rows = parts.iter().map(|p| p.file_metadata().num_rows()).sum();
    let file_metadata = FileMetaData::new(
        first.version(),
        num_rows,
        first.created_by().map(str::to_owned),
        first.key_value_metadata().cloned(),
        first.schema_descr_ptr(),
        first.column_orders().cloned(),
    );
    let indexes = indexes.try_build().map_err(|e| wrong(e.to_string()))?;
    let metadata = ParquetMetaDataBuilder::new(file_metadata)
        .set_row_groups(row_groups)
        .set_page_index(Some(Arc::new(indexes)))
        .build();
    let footer = footer_at(&metadata, at).map_err(|e| wrong(e.to_string()))?;
    Ok(Joined { rows, footer })
}

/// Where a part's row groups end: the end of its last column chunk (at least just after the
/// leading magic, for a part of no rows).
fn rows_end(part: &ParquetMetaData) -> u64 {
    let chunks = part.row_groups().iter().flat_map(RowGroupMetaData::columns);
    chunks.map(|chunk| chunk.byte_range()).map(|(start, length)| start + length).fold(MAGIC.len() as u64, u64::max)
}

fn shifted_row_group(
    row_group: &RowGroupMetaData,
    shift: i64,
    ordinal: usize,
) -> Result<RowGroupMetaData, ParquetError> {
    let columns = row_group.columns().iter().map(|chunk| shifted_chunk(chunk, shift)).collect::<Result<Vec<_>, _>>()?;
    let mut builder = row_group.clone().into_builder().set_column_metadata(columns).set_ordinal(ordinal as i32);
    if let Some(offset) = row_group.file_offset() {
        builder = builder.set_file_offset(offset + shift);
    }
    builder.build()
}

fn shifted_chunk(chunk: &ColumnChunkMetaData, shift: i64) -> Result<ColumnChunkMetaData, ParquetError> {
    let moved = |offset: Option<i64>| offset.map(|o| o + shift);
    chunk
        .clone()
        .into_builder()
        .set_data_page_offset(chunk.data_page_offset() + shift)
        .set_dictionary_page_offset(moved(chunk.dictionary_page_offset()))
        .set_index_page_offset(moved(chunk.index_page_offset()))
        .set_bloom_filter_offset(moved(chunk.bloom_filter_offset()))
        // The page indexes are written anew with the footer, which sets where they are.
        .set_offset_index_offset(None)
        .set_offset_index_length(None)
        .set_column_index_offset(None)
        .set_column_index_length(None)
        .build()
}

/// The footer (page indexes, metadata, length, magic) of `metadata` written at byte `at` of a
/// file: the page indexes' positions in the metadata are counted from the file's start.
fn footer_at(metadata: &ParquetMetaData, at: u64) -> Result<Bytes, ParquetError> {
    let mut sink = SkipFirst { skip: at, bytes: Vec::new() };
    let mut tracked = TrackedWrite::new(&mut sink);
    // Counted, not copied: `SkipFirst` drops them, and writes this large bypass the buffer.
    let zeros = vec![0u8; 1 << 20];
    let mut left = at;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        tracked.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    ParquetMetaDataWriter::new_with_tracked(tracked, metadata).with_preserve_page_index_locations(false).finish()?;
    Ok(sink.bytes.into())
}

/// Drops the first `skip` bytes written to it and keeps the rest.
struct SkipFirst {
    skip: u64,
    bytes: Vec<u8>,
}

impl Write for SkipFirst {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let skipped = (self.skip.min(buf.len() as u64)) as usize;
        self.skip -= skipped as u64;
        self.bytes.extend_from_slice(&buf[skipped..]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::{
        ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
    };

    use super::*;
    use crate::formats::parquet::ParquetWriter;

    fn schema(id_type: DataType) -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("id", id_type, false),
            Field::new("label", DataType::Utf8, true),
            Field::new("probability", DataType::Float32, true),
        ]))
    }

    /// A part as the shards write theirs: rows `ids`, in row groups of `row_group_rows`.
    fn part(ids: Range<i64>, row_group_rows: usize) -> Bytes {
        let mut writer = ParquetWriter::new(Vec::new(), schema(DataType::Int64), row_group_rows).unwrap();
        let rows = ids.clone().map(|i| i as f32 / 100.0);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(
                ids.clone()
                    .map(|i| Some(["setosa", "versicolor", "virginica"][i as usize % 3]))
                    .collect::<StringArray>(),
            ),
            Arc::new(Float32Array::from_iter_values(rows)),
        ];
        writer.write(&RecordBatch::try_new(schema(DataType::Int64), columns).unwrap()).unwrap();
        writer.finish().unwrap().into()
    }

    fn footer(part: &Bytes) -> ParquetMetaData {
        read_footer(Arc::new(part.clone())).unwrap()
    }

    /// The joined file's bytes, as the worker assembles them.
    fn joined(parts: &[Bytes]) -> Bytes {
        let plan = join(&parts.iter().map(footer).collect::<Vec<_>>()).unwrap();
        let mut file = MAGIC.to_vec();
        for (part, rows) in parts.iter().zip(&plan.rows) {
            file.extend_from_slice(&part[rows.start as usize..rows.end as usize]);
        }
        file.extend_from_slice(&plan.footer);
        assert_eq!(file.len() as u64, plan.size());
        file.into()
    }

    fn ids(file: Bytes, selection: Option<RowSelection>) -> Vec<i64> {
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let mut builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).unwrap();
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        builder
            .build()
            .unwrap()
            .flat_map(|batch| batch.unwrap().column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[test]
    fn the_parts_row_groups_follow_each_other_under_a_footer_that_points_at_them() {
        // GIVEN three parts, one of no rows, in row groups of 2 and 3 rows
        let parts = [part(0..5, 2), part(5..5, 2), part(5..12, 3)];
        // WHEN they are joined
        let file = joined(&parts);
        // THEN every row is there, in order, and the metadata counts them
        assert_eq!(ids(file.clone(), None), (0..12).collect::<Vec<_>>());
        let metadata = footer(&file);
        assert_eq!((metadata.num_row_groups(), metadata.file_metadata().num_rows()), (6, 12));
        assert_eq!(metadata.file_metadata().schema(), footer(&parts[0]).file_metadata().schema());
        // AND each row group's ordinal, and each page index, is where it now is
        let page_index = metadata.page_index().expect("the joined file has page indexes");
        for (index, row_group) in metadata.row_groups().iter().enumerate() {
            assert_eq!(row_group.ordinal(), Some(index as i32));
            for (column, chunk) in row_group.columns().iter().enumerate() {
                let pages = page_index.offset_index(index, column).expect("an offset index").page_locations();
                assert_eq!(pages[0].offset, chunk.data_page_offset(), "row group {index}, column {column}");
                assert!(page_index.column_index(index, column).is_some());
            }
        }
        // AND a reader that skips pages by the offset index reads the rows it selects
        let skip_six = RowSelection::from(vec![RowSelector::skip(6), RowSelector::select(6)]);
        assert_eq!(ids(file, Some(skip_six)), (6..12).collect::<Vec<_>>());
    }

    #[test]
    fn parts_of_different_schemas_are_refused() {
        let mut writer = ParquetWriter::new(Vec::new(), schema(DataType::Int32), 10).unwrap();
        let other: Bytes = {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(arrow_array::Int32Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["setosa"])),
                Arc::new(Float32Array::from(vec![0.5])),
            ];
            writer.write(&RecordBatch::try_new(schema(DataType::Int32), columns).unwrap()).unwrap();
            writer.finish().unwrap().into()
        };
        let error = join(&[footer(&part(0..3, 2)), footer(&other)]).unwrap_err();
        assert!(error.to_string().contains("part 1's schema differs"), "{error}");
    }
}
