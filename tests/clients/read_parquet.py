"""Reads Parquet files with pyarrow, polars and DuckDB, as their users do, and prints what each
saw as one JSON object, for tests/parquet.rs:

    read_parquet.py FILE...
    read_parquet.py --duckdb SQL      (prints the query's rows as a JSON list of lists)
    read_parquet.py --compare A B     (whether each reader reads the same rows, in order, from both)

{FILE: {"schema": {column: pyarrow type}, "row_groups": n, "codecs": [codec, ...],
        "statistics": bool (DuckDB finds min/max in every column chunk that has values),
        "pyarrow": rows, "polars": rows, "duckdb": rows}}

A row is a list of its values: numbers as numbers, everything else as text; each reader's rows
must be the same.
"""

import datetime
import decimal
import json
import sys

import duckdb
import polars as pl
import pyarrow.parquet as pq


def plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


def rows_of(records):
    return [[plain(v) for v in row] for row in records]


def describe(path):
    file = pq.ParquetFile(path)
    meta = file.metadata
    chunks = [meta.row_group(g).column(c) for g in range(meta.num_row_groups) for c in range(meta.num_columns)]
    table = file.read()
    con = duckdb.connect()
    return {
        "schema": {field.name: str(field.type) for field in table.schema},
        "row_groups": meta.num_row_groups,
        "codecs": sorted({chunk.compression for chunk in chunks}),
        # pyarrow keeps no min/max of floats from a file without NaN counts; DuckDB, which
        # skips row groups by them, reads them all.
        "statistics": all(
            low is not None or nulls == values
            for low, nulls, values in con.execute(
                "SELECT stats_min_value, stats_null_count, num_values FROM parquet_metadata(?)", [path]
            ).fetchall()
        ),
        "pyarrow": rows_of(zip(*(column.to_pylist() for column in table.columns))),
        "polars": rows_of(pl.read_parquet(path).iter_rows()),
        "duckdb": rows_of(con.execute("SELECT * FROM read_parquet(?)", [path]).fetchall()),
    }


def compare(a, b):
    con = duckdb.connect()
    count = "SELECT count(*) FROM read_parquet(?)"
    differ = "SELECT count(*) FROM (SELECT * FROM read_parquet(?) EXCEPT ALL SELECT * FROM read_parquet(?))"
    return {
        "rows": [pq.ParquetFile(path).metadata.num_rows for path in (a, b)],
        "row_groups": [pq.ParquetFile(path).metadata.num_row_groups for path in (a, b)],
        "pyarrow": pq.read_table(a).equals(pq.read_table(b)),
        "polars": pl.read_parquet(a).equals(pl.read_parquet(b)),
        # DuckDB reads row groups in parallel: the same rows, counted, in any order.
        "duckdb": con.execute(count, [a]).fetchone() == con.execute(count, [b]).fetchone()
        and con.execute(differ, [a, b]).fetchone()[0] == 0,
    }


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        json.dump(compare(sys.argv[2], sys.argv[3]), sys.stdout)
    elif sys.argv[1] == "--duckdb":
        json.dump(rows_of(duckdb.connect().execute(sys.argv[2]).fetchall()), sys.stdout)
    else:
        json.dump({path: describe(path) for path in sys.argv[1:]}, sys.stdout)
