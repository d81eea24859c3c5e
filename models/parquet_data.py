"""Write the Parquet test files (tests/data/parquet/) as pyarrow, polars and DuckDB write them.

Run from the repository root with the venv of tools/requirements-models.txt (make models):

    .tools/models/bin/python models/parquet_data.py

examples/data/iris.parquet, the example make local uploads, is iris_snappy.parquet below.

Every file holds sklearn's iris rows of examples/data/iris.csv (the answers are
models/reference/iris_logreg.csv, onnxruntime's), laid out another way:

  iris_<codec>.parquet   pyarrow, 3 row groups of 50, each codec pyarrow writes (snappy, zstd,
                         gzip, lz4, brotli, none); beside the features: a dictionary-encoded
                         string with nulls, a date, a timestamp, a decimal and a nested struct
  iris_page_v2.parquet   data pages v2, and plain encoding (no dictionaries)
  iris_polars.parquet    written by polars (its defaults: zstd, one row group)
  iris_duckdb.parquet    written by DuckDB (COPY ... TO ... (FORMAT parquet))
  iris_vector.parquet    the features as one list<float> column, "features"
  iris_fixed_vector.parquet  the same as fixed_size_list<float, 4>
  iris_nulls.parquet     rows 3 and 7 have a null feature
  all_null.parquet       every row has a null feature
  typed_colour.parquet   the rows of models/zoo/column_transformer_strings_numbers.csv: a
                         string column (dictionary) and a float64 one for a typed model
  double_iris.parquet    the rows of models/zoo/logreg_iris_double.csv as float64 columns, for
                         a model exported from float64 data
and files that must fail, each for a reason a person can act on:
  bad_truncated.parquet  a valid file cut short
  bad_not_parquet.parquet  a CSV file under a Parquet name
  bad_footer.parquet     the footer's offsets point 64 bytes past the column chunks
  bad_type.parquet       sepal_length holds strings
  empty.parquet          the schema and no rows
"""

import csv
import datetime
import decimal
import os

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "parquet")
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CODECS = ["snappy", "zstd", "gzip", "lz4", "brotli", "none"]


def iris_rows():
    with open(os.path.join(ROOT, "examples", "data", "iris.csv"), newline="") as f:
        return list(csv.DictReader(f))


def iris_table(rows):
    """The iris rows with pass-through columns of the types a data lake holds."""
    n = len(rows)
    names = [None if i % 10 == 4 else ["north", "south", "east"][i % 3] for i in range(n)]
    start = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    columns = {
        "id": pa.array([int(r["id"]) for r in rows], pa.int64()),
        **{name: pa.array([float(r[name]) for r in rows], pa.float64()) for name in FEATURES},
        "site": pa.array(names, pa.string()).dictionary_encode(),
        "measured_on": pa.array([datetime.date(2026, 12, 1) + datetime.timedelta(days=i % 28) for i in range(n)]),
        "measured_at": pa.array([start + datetime.timedelta(minutes=i) for i in range(n)], pa.timestamp("us", "UTC")),
        "price": pa.array([decimal.Decimal(f"{i}.{i % 100:02d}") for i in range(n)], pa.decimal128(10, 2)),
        "meta": pa.array([{"batch": i // 50, "source": "field"} for i in range(n)]),
    }
    return pa.table(columns)


def main():
    os.makedirs(OUT, exist_ok=True)
    rows = iris_rows()
    table = iris_table(rows)
    for codec in CODECS:
        pq.write_table(table, os.path.join(OUT, f"iris_{codec}.parquet"), compression=codec, row_group_size=50)
    pq.write_table(table, os.path.join(ROOT, "examples", "data", "iris.parquet"), row_group_size=50)
    pq.write_table(
        table,
        os.path.join(OUT, "iris_page_v2.parquet"),
        data_page_version="2.0",
        use_dictionary=False,
        row_group_size=64,
    )

    plain = pa.table({"id": table["id"], **{name: table[name] for name in FEATURES}})
    pl.from_arrow(plain).write_parquet(os.path.join(OUT, "iris_polars.parquet"))
    con = duckdb.connect()
    con.register("iris", plain)
    con.execute(f"COPY (SELECT * FROM iris ORDER BY id) TO '{os.path.join(OUT, 'iris_duckdb.parquet')}' (FORMAT parquet)")

    vectors = [[float(r[name]) for name in FEATURES] for r in rows]
    pq.write_table(
        pa.table({"id": table["id"], "features": pa.array(vectors, pa.list_(pa.float32()))}),
        os.path.join(OUT, "iris_vector.parquet"),
        row_group_size=64,
    )
    pq.write_table(
        pa.table({"id": table["id"], "features": pa.array(vectors, pa.list_(pa.float32(), 4))}),
        os.path.join(OUT, "iris_fixed_vector.parquet"),
    )

    with_nulls = {name: plain[name].to_pylist() for name in plain.column_names}
    with_nulls["sepal_width"][2] = None
    with_nulls["petal_length"][6] = None
    pq.write_table(pa.table(with_nulls, schema=plain.schema), os.path.join(OUT, "iris_nulls.parquet"))
    with_nulls["sepal_length"] = [None] * len(with_nulls["sepal_length"])
    pq.write_table(pa.table(with_nulls, schema=plain.schema), os.path.join(OUT, "all_null.parquet"))

    with open(os.path.join(ROOT, "models", "zoo", "column_transformer_strings_numbers.csv"), newline="") as f:
        typed = list(csv.DictReader(f))
    pq.write_table(
        pa.table(
            {
                "id": pa.array([int(r["id"]) for r in typed], pa.int64()),
                "colour": pa.array([r["colour"] for r in typed]).dictionary_encode(),
                "alcohol": pa.array([float(r["alcohol"]) for r in typed], pa.float64()),
            }
        ),
        os.path.join(OUT, "typed_colour.parquet"),
    )

    with open(os.path.join(ROOT, "models", "zoo", "logreg_iris_double.csv"), newline="") as f:
        double = list(csv.DictReader(f))
    columns = {"id": pa.array([int(r["id"]) for r in double], pa.int64())}
    columns.update({f"x{i}": pa.array([float(r[f"x{i}"]) for r in double], pa.float64()) for i in range(4)})
    pq.write_table(pa.table(columns), os.path.join(OUT, "double_iris.parquet"))

    whole = open(os.path.join(OUT, "iris_snappy.parquet"), "rb").read()
    open(os.path.join(OUT, "bad_truncated.parquet"), "wb").write(whole[: len(whole) // 2])
    open(os.path.join(OUT, "bad_not_parquet.parquet"), "wb").write(
        open(os.path.join(ROOT, "examples", "data", "iris.csv"), "rb").read()
    )
    # 64 bytes of padding after the leading magic: every offset the footer names is now short.
    open(os.path.join(OUT, "bad_footer.parquet"), "wb").write(whole[:4] + bytes(64) + whole[4:])
    wrong = plain.set_column(1, "sepal_length", pa.array([str(v) for v in plain["sepal_length"].to_pylist()]))
    pq.write_table(wrong, os.path.join(OUT, "bad_type.parquet"))
    pq.write_table(plain.slice(0, 0), os.path.join(OUT, "empty.parquet"))


if __name__ == "__main__":
    main()
