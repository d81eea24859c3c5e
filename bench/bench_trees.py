"""Tree ensembles: sluice against polars + onnxruntime on one core, onnxruntime's bare run as the floor.

Trains, on seeded synthetic rows of 13 features (scikit-learn's make_classification):
  * a 100-tree random forest (scikit-learn, skl2onnx, default depth: fully grown trees),
  * a 300-tree, depth-6 gradient-boosted model (XGBoost, onnxmltools),
then over --rows rows (1,000,000 by default), each pinned to core 0 with one thread, reports:
  * sluice: `worker transform` over the CSV file, writing its predictions,
  * polars + onnxruntime: the same file read in chunks of 100,000 rows, predictions written as CSV,
  * onnxruntime's bare `run` on the same rows already in memory (no parsing, no writing): the floor.
Each case runs --repeat times (3 by default), taking turns; the fastest counts.

    .tools/models/bin/python bench/bench_trees.py     # make bench-trees

Needs `cargo build --release --workspace` first (make bench-trees does it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import SESSION, WORKER, run

FEATURES = [f"x{i}" for i in range(13)]

# The file as a Python user would run it: polars reading chunks, onnxruntime, CSV out.
POLARS_TREES = SESSION + r'''
import polars as pl

features = [f"x{i}" for i in range(13)]
names = [o.name for o in session.get_outputs()]
with open(out, "wb") as sink:
    header = True
    for chunk in pl.scan_csv(data).collect_batches(chunk_size=100_000):
        outputs = session.run(None, {input_name: chunk.select(features).to_numpy().astype(np.float32)})
        columns = {"id": chunk["id"]}
        for name, values in zip(names, outputs):
            values = np.asarray(values).reshape(len(chunk), -1)
            for i in range(values.shape[1]):
                columns[name if values.shape[1] == 1 else f"{name}_{i}"] = values[:, i]
        pl.DataFrame(columns).write_csv(sink, include_header=header)
        header = False
'''

# onnxruntime alone, on rows already in memory: what the model costs, nothing else.
BARE_RUN = SESSION + r'''
import time
x = np.load(data)
started = time.perf_counter()
for start in range(0, len(x), 100_000):
    session.run(None, {input_name: x[start:start + 100_000]})
print(time.perf_counter() - started, file=sys.stderr)
'''


def make_models(tmp: Path, seed: int = 0) -> dict[str, Path]:
    import onnx
    import xgboost
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from skl2onnx import to_onnx
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=20_000, n_features=13, n_informative=8, n_classes=3, random_state=seed)
    x = x.astype(np.float32)
    forest = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1).fit(x, y)
    boosted = xgboost.XGBClassifier(n_estimators=300, max_depth=6, random_state=seed, n_jobs=1).fit(x, (y == 1).astype(int))
    models = {
        "random forest, 100 trees": to_onnx(forest, x[:1], options={id(forest): {"zipmap": False}}),
        "XGBoost, 300 trees of depth 6": convert_xgboost(
            boosted, initial_types=[("input", FloatTensorType([None, 13]))], target_opset=15
        ),
    }
    paths = {}
    for i, (name, model) in enumerate(models.items()):
        path = tmp / f"model{i}.onnx"
        onnx.save(model, path)
        path.with_name(path.name + ".json").write_text(json.dumps({"features": FEATURES, "passthrough": ["id"]}))
        nodes = sum(len(a.ints) for n in model.graph.node for a in n.attribute if a.name == "nodes_nodeids")
        print(f"  {name}: {nodes:,} nodes")
        paths[name] = path
    return paths


def make_data(csv: Path, npy: Path, rows: int, seed: int = 1) -> None:
    from sklearn.datasets import make_classification

    x, _ = make_classification(n_samples=rows, n_features=13, n_informative=8, n_classes=3, random_state=seed)
    x = np.round(x, 4).astype(np.float32)
    np.save(npy, x)
    with csv.open("w") as out:
        out.write("id," + ",".join(FEATURES) + "\n")
        for start in range(0, rows, 200_000):
            block = x[start : start + 200_000]
            ids = range(start + 1, start + len(block) + 1)
            out.write("\n".join(f"{i}," + ",".join(f"{v:.4f}" for v in row) for i, row in zip(ids, block.tolist())))
            out.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case; the fastest counts (default 3)")
    args = parser.parse_args()
    if not WORKER.exists():
        sys.exit(f"{WORKER} is missing: run `cargo build --release --workspace` (or `make bench-trees`)")
    with tempfile.TemporaryDirectory(prefix="sluice-bench-trees-") as tmp:
        tmp = Path(tmp)
        print("training the models …", flush=True)
        models = make_models(tmp)
        data, array = tmp / "rows.csv", tmp / "rows.npy"
        print(f"generating {args.rows:,} seeded rows …", flush=True)
        make_data(data, array, args.rows)
        print(f"input: {data.stat().st_size / 1e6:.0f} MB; each case on core 0, one thread\n")
        for name, model in models.items():
            cases = {
                "sluice (file to file)": [str(WORKER), "transform", "--model", str(model), "--input", str(data),
                                          "--output", str(tmp / "out.csv"), "--threads", "1"],
                "polars + onnxruntime (file to file)": [sys.executable, "-c", POLARS_TREES, str(model), str(data),
                                                        str(tmp / "py.csv"), "1"],
            }
            timings = {case: [] for case in cases}
            floor = []
            for _ in range(max(1, args.repeat)):
                for case, command in cases.items():
                    timings[case].append(run(command, "0"))
                floor.append(bare_run(model, array))
            print(f"== {name}")
            print(f"{'':40} {'seconds':>8} {'rows/s':>12} {'peak RSS':>10}")
            best = {}
            for case in cases:
                seconds, rss = min(t for t, _ in timings[case]), max(r for _, r in timings[case])
                best[case] = seconds
                print(f"{case:40} {seconds:8.2f} {args.rows / seconds:12,.0f} {rss / 2**20:8.1f} MB")
            print(f"{'onnxruntime run, rows in memory (floor)':40} {min(floor):8.2f} {args.rows / min(floor):12,.0f}")
            ratio = best["polars + onnxruntime (file to file)"] / best["sluice (file to file)"]
            print(f"  sluice does {ratio:.2f}x the rows/s of polars + onnxruntime\n", flush=True)


def bare_run(model: Path, array: Path) -> float:
    import subprocess

    result = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", BARE_RUN, str(model), str(array), "-", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True,
    )
    return float(result.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
