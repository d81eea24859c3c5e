"""Parquet to Parquet: sluice against polars + onnxruntime, each on one pinned core.

Writes --rows seeded iris-like rows (4,000,000 by default) as Parquet with pyarrow (snappy, row
groups of 1Mi rows: pyarrow's defaults), with a string column beside the id and the features,
then runs the iris logistic regression (models/iris_logreg.onnx) over them, writing the id, the
label and the three probabilities as Parquet:
  * sluice: `worker transform --input rows.parquet --output out.parquet --threads 1`,
  * polars + onnxruntime: `pl.read_parquet`, the features to a float32 array, `session.run`,
    a frame of the same columns, `write_parquet` (snappy, as sluice writes).
Each case runs --repeat times (3 by default), taking turns; the fastest counts. Peak memory is
each process's high-water mark (GNU time).

    .tools/models/bin/python bench/bench_parquet.py     # make bench-parquet

Needs `cargo build --release --workspace` first (make bench-parquet does it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import IRIS_FEATURES, ROOT, SESSION, WORKER, run

MODEL = ROOT / "models" / "iris_logreg.onnx"

# The file as a polars user runs it.
POLARS_PARQUET = SESSION + r'''
import polars as pl

classes = np.asarray(["setosa", "versicolor", "virginica"])
frame = pl.read_parquet(data)
label, probabilities = session.run(None, {input_name: frame.select(features).to_numpy().astype(np.float32)})
out_frame = pl.DataFrame({"id": frame["id"], "label": classes[label]})
for i, name in enumerate(classes):
    out_frame = out_frame.with_columns(pl.Series(f"probabilities_{name}", probabilities[:, i]))
out_frame.write_parquet(out, compression="snappy")
'''


def make_data(path: Path, rows: int, seed: int = 1) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_iris

    iris = load_iris().data
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, 1_000_000):
        n = min(1_000_000, rows - start)
        x = np.round(iris[rng.integers(0, len(iris), n)] + rng.normal(0, 0.05, (n, 4)), 3)
        table = pa.table(
            {
                "id": pa.array(np.arange(start + 1, start + n + 1), pa.int64()),
                **{name: pa.array(x[:, i]) for i, name in enumerate(IRIS_FEATURES)},
                "site": pa.array(np.asarray(["north", "south", "east"])[rng.integers(0, 3, n)]),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        writer.write_table(table, row_group_size=1 << 20)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case; the fastest counts (default 3)")
    args = parser.parse_args()
    if not WORKER.exists():
        sys.exit(f"{WORKER} is missing: run `cargo build --release --workspace` (or `make bench-parquet`)")
    with tempfile.TemporaryDirectory(prefix="sluice-bench-parquet-") as tmp:
        tmp = Path(tmp)
        data = tmp / "rows.parquet"
        print(f"writing {args.rows:,} seeded rows as Parquet …", flush=True)
        make_data(data, args.rows)
        print(f"input: {data.stat().st_size / 1e6:.0f} MB; each case on core 0, one thread\n")
        cases = {
            "sluice (Parquet to Parquet)": [str(WORKER), "transform", "--model", str(MODEL), "--input", str(data),
                                            "--output", str(tmp / "out.parquet"), "--threads", "1"],
            "polars + onnxruntime": [sys.executable, "-c", POLARS_PARQUET, str(MODEL), str(data),
                                     str(tmp / "py.parquet"), "1"],
        }
        timings = {case: [] for case in cases}
        for _ in range(max(1, args.repeat)):
            for case, command in cases.items():
                timings[case].append(run(command, "0"))
        check(tmp / "out.parquet", tmp / "py.parquet")
        print(f"{'':32} {'seconds':>8} {'rows/s':>12} {'peak RSS':>10}")
        best = {}
        for case in cases:
            seconds, rss = min(t for t, _ in timings[case]), max(r for _, r in timings[case])
            best[case] = seconds
            print(f"{case:32} {seconds:8.2f} {args.rows / seconds:12,.0f} {rss / 2**20:8.1f} MB")
        ratio = best["polars + onnxruntime"] / best["sluice (Parquet to Parquet)"]
        print(f"  sluice does {ratio:.2f}x the rows/s of polars + onnxruntime", flush=True)


def check(ours: Path, theirs: Path) -> None:
    """The two outputs hold the same labels and (to float32 precision) probabilities."""
    import polars as pl

    a, b = pl.read_parquet(ours), pl.read_parquet(theirs)
    assert a.columns == b.columns, (a.columns, b.columns)
    assert a["id"].equals(b["id"]) and a["label"].equals(b["label"]), "labels differ"
    for column in a.columns[2:]:
        assert np.allclose(a[column].to_numpy(), b[column].to_numpy(), atol=1e-6), column


if __name__ == "__main__":
    main()
