"""Throughput and memory of the transform engine against the usual Python approach.

Runs, in one go and on the same seeded data:
  * the engine (`worker transform`, release build) with the logistic-regression and MLP models,
  * the same binary with an identity model (parse and write, no real inference): the I/O floor,
  * pandas + onnxruntime and polars + onnxruntime, reading in chunks and writing CSV: the Python
    alternatives,
each pinned to one core and then given two, and prints rows/s, peak RSS and the ratios. Each
case runs --repeat times (3 by default), the cases taking turns, and the fastest run counts, for
every case alike: on a shared virtual machine single runs vary by a fifth and more.

    .tools/models/bin/python bench/bench.py                 # 1,000,000 rows (make bench)
    .tools/models/bin/python bench/bench.py --rows 10000000 # the memory check at 10M rows

Needs `cargo build --release --workspace` first (make bench does it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "worker"
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

# What every Python alternative shares (bench_images.py's too): the arguments and an onnxruntime
# session with `threads` intra-op threads, as sluice gets `--threads`.
SESSION = r'''
import sys
import numpy as np
import onnxruntime as ort

model, data, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
'''

PANDAS_BASELINE = SESSION + r'''
import pandas as pd

classes = ["setosa", "versicolor", "virginica"]
header = True
for chunk in pd.read_csv(data, chunksize=100_000):
    label, probabilities = session.run(None, {input_name: chunk[features].to_numpy(dtype=np.float32)})
    frame = pd.DataFrame(probabilities, columns=[f"probabilities_{c}" for c in classes])
    frame.insert(0, "label", np.asarray(classes)[label])
    frame.insert(0, "id", chunk["id"].to_numpy())
    frame.to_csv(out, mode="w" if header else "a", header=header, index=False)
    header = False
'''

# The same with polars: its streaming engine hands the file over in chunks of 100,000 rows.
POLARS_BASELINE = SESSION + r'''
import polars as pl

classes = np.asarray(["setosa", "versicolor", "virginica"])
with open(out, "wb") as sink:
    header = True
    for chunk in pl.scan_csv(data).collect_batches(chunk_size=100_000):
        label, probabilities = session.run(None, {input_name: chunk.select(features).to_numpy().astype(np.float32)})
        frame = pl.DataFrame({"id": chunk["id"], "label": classes[label]}).with_columns(
            pl.Series(f"probabilities_{c}", probabilities[:, i]) for i, c in enumerate(classes)
        )
        frame.write_csv(sink, include_header=header)
        header = False
'''


def make_data(path: Path, rows: int, seed: int = 42) -> None:
    """Iris-like rows: each class's mean and spread from the real data set, seeded."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 3, size=rows)
    means = np.array([iris.data[iris.target == c].mean(axis=0) for c in range(3)])
    stds = np.array([iris.data[iris.target == c].std(axis=0) for c in range(3)])
    with path.open("w") as out:
        out.write("id," + ",".join(IRIS_FEATURES) + "\n")
        step = 500_000
        for start in range(0, rows, step):
            c = classes[start : start + step]
            x = np.round(np.abs(means[c] + rng.standard_normal((len(c), 4)) * stds[c]), 1)
            ids = np.arange(start + 1, start + len(c) + 1)
            lines = [f"{i},{a},{b},{d},{e}" for i, (a, b, d, e) in zip(ids, x.tolist())]
            out.write("\n".join(lines) + "\n")


def make_identity_model(path: Path) -> None:
    """A model that returns its 4 features: the engine then only parses and writes."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["features"], ["value"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, path)
    path.with_name(path.name + ".json").write_text(
        '{"features": ["sepal_length", "sepal_width", "petal_length", "petal_width"], "passthrough": ["id"]}'
    )


def run(command: list[str], cores: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of `command` pinned to `cores`.

    The peak comes from GNU time, a small process in between: Linux carries the high-water mark
    across fork and exec, so measured directly, every child would start at this script's size.
    """
    started = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "taskset", "-c", cores, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr}")
    return elapsed, int(result.stderr.strip().splitlines()[-1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-python", action="store_true", help="only the Rust runs (for the 10M-row memory check)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case; the fastest counts (default 3)")
    args = parser.parse_args()
    if not WORKER.exists():
        sys.exit(f"{WORKER} is missing: run `cargo build --release --workspace` (or `make bench`)")

    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        tmp = Path(tmp)
        data = tmp / "iris_like.csv"
        print(f"generating {args.rows:,} seeded iris-like rows …", flush=True)
        make_data(data, args.rows)
        identity = tmp / "identity.onnx"
        make_identity_model(identity)
        size_mb = data.stat().st_size / 1e6
        print(f"input: {size_mb:.0f} MB\n")

        def engine(model: Path, threads: int) -> list[str]:
            return [str(WORKER), "transform", "--model", str(model), "--input", str(data),
                    "--output", str(tmp / "out.csv"), "--threads", str(threads)]

        def python(script: str, model: Path, threads: int) -> list[str]:
            return [sys.executable, "-c", script, str(model), str(data), str(tmp / "py.csv"), str(threads)]

        runs = {}
        for cores, threads in (("0", 1), ("0,1", 2)):
            label = f"{threads} core{'s' if threads > 1 else ''}"
            cases = [
                ("sluice, logistic regression", engine(ROOT / "models/iris_logreg.onnx", threads)),
                ("sluice, MLP", engine(ROOT / "models/iris_mlp.onnx", threads)),
                ("sluice, I/O floor (identity)", engine(identity, threads)),
            ]
            if not args.skip_python:
                for library, script in (("pandas", PANDAS_BASELINE), ("polars", POLARS_BASELINE)):
                    cases += [
                        (f"{library} + onnxruntime, logistic regression",
                         python(script, ROOT / "models/iris_logreg.onnx", threads)),
                        (f"{library} + onnxruntime, MLP", python(script, ROOT / "models/iris_mlp.onnx", threads)),
                    ]
            print(f"== {label}", flush=True)
            # The cases take turns, so a slow spell of a shared machine falls on all of them alike.
            timings = {name: [] for name, _ in cases}
            for _ in range(max(1, args.repeat)):
                for name, command in cases:
                    timings[name].append(run(command, cores))
            print(f"{'':44} {'seconds':>8} {'rows/s':>12} {'peak RSS':>10}")
            for name, _ in cases:
                seconds, rss = min(t for t, _ in timings[name]), max(r for _, r in timings[name])
                runs[(label, name)] = (seconds, rss)
                print(f"{name:44} {seconds:8.2f} {args.rows / seconds:12,.0f} {rss / 2**20:8.1f} MB", flush=True)
            floor = runs[(label, "sluice, I/O floor (identity)")][0]
            for model in ("logistic regression", "MLP"):
                ours = runs[(label, f"sluice, {model}")][0]
                line = f"  {model}: {ours / floor:.2f}x the I/O floor's time"
                if not args.skip_python:
                    for library in ("pandas", "polars"):
                        theirs = runs[(label, f"{library} + onnxruntime, {model}")][0]
                        line += f", {theirs / ours:.1f}x the rows/s of {library} + onnxruntime"
                print(line)
            print()


if __name__ == "__main__":
    main()
