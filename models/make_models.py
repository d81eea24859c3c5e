"""Build sluice's example/test ONNX models, example CSV data and reference outputs.

Run from the repository root with the pinned venv of tools/requirements-models.txt (make models):

    .tools/models/bin/python models/make_models.py

It writes:

  models/iris_logreg.onnx   LogisticRegression on sklearn's iris data
  models/iris_forest.onnx   RandomForestClassifier (10 trees, max_depth 4) on iris
  models/iris_mlp.onnx      MLPClassifier (one hidden layer of 8) on iris
      input  `features` float32 [N, 4]
      output `label` int64 [N], `probabilities` float32 [N, 3]  (no ZipMap)
  models/iris_named.onnx    LogisticRegression trained on the class names themselves
      output `label` string [N] (the classifier's classlabels_strings), and no sidecar:
      its configuration is the JSON of its metadata entry "sluice"
  models/diabetes_linreg.onnx  LinearRegression on sklearn's diabetes data
      input  `features` float32 [N, 10], output `variable` float32 [N, 1]
  models/half_plus_two.onnx    hand-built graph y = x / 2 + 2
      input  `x` float32 [N, 1], output `y` float32 [N, 1]
  models/<model>.onnx.json     sidecar model configurations (not for half_plus_two)
  examples/data/iris.csv, diabetes.csv, half_plus_two.csv   example inputs
  models/reference/<model>.csv  onnxruntime outputs for those CSV files
  models/repository/<name>/<version>/model.onnx (+ .json)   the example model repository:
      iris 1 (the logistic regression), iris 2 (the MLP), diabetes 1, half_plus_two 1

Everything is deterministic (fixed random_state everywhere), so re-running the
script reproduces the same models and the same reference outputs. The script
asserts that the models pass the ONNX checker, only use operators that tract-onnx
0.23 implements (no ZipMap, Scaler or TreeEnsembleRegressor), and that
onnxruntime agrees with scikit-learn.
"""

import csv
import json
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier

from image_models import make_image_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
REFERENCE = os.path.join(MODELS, "reference")
DATA = os.path.join(ROOT, "examples", "data")

TARGET_OPSET = {"": 13, "ai.onnx.ml": 3}
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]
DIABETES_ROWS = 100

# Operators tract cannot run (or that change the output format).
FORBIDDEN_OPS = {"ZipMap", "Scaler", "TreeEnsembleRegressor"}
# Operators we expect; every one is registered by tract-onnx 0.23.9. Anything
# else showing up (e.g. after a skl2onnx upgrade) must be checked against tract.
TRACT_OPS = {
    "Add", "ArgMax", "ArrayFeatureExtractor", "Cast", "Concat", "Div", "Flatten",
    "Gemm", "Identity", "LinearClassifier", "LinearRegressor", "MatMul", "Mul",
    "Normalizer", "Relu", "Reshape", "Sigmoid", "Softmax", "Squeeze", "Sub",
    "Tanh", "TreeEnsembleClassifier", "Unsqueeze",
}

# Any non-convergence is an error, not a warning.
warnings.simplefilter("error", ConvergenceWarning)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    print(f"  wrote {os.path.relpath(path, ROOT)} ({len(rows)} rows)")


def read_csv(path):
    """Parse a CSV back with the stdlib (exact decimal -> float64 parsing)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def f32_repr(v):
    """Shortest decimal that round-trips the float32 value (via float64)."""
    return repr(float(np.float32(v)))


def assert_no_double_rounding(values):
    """Parsing decimal -> f64 -> f32 must equal decimal -> f32 directly.

    The two can only differ when the float64 value lies exactly half-way
    between two float32 values; make sure none of our inputs does, so the
    Rust side may parse straight to f32 or go through f64.
    """
    x64 = np.asarray(values, dtype=np.float64).ravel()
    x32 = x64.astype(np.float32)
    up = np.nextafter(x32, np.float32(np.inf)).astype(np.float64)
    down = np.nextafter(x32, np.float32(-np.inf)).astype(np.float64)
    c = x32.astype(np.float64)
    ties = (x64 == (c + up) / 2) | (x64 == (c + down) / 2)
    assert not ties.any(), f"float32 rounding ties in data: {x64[ties]}"


def dedupe_opsets(onx):
    """skl2onnx 1.20 lists the default domain twice in opset_import; keep one."""
    seen = {}
    for o in onx.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        assert seen.setdefault(domain, o.version) == o.version, onx.opset_import
    del onx.opset_import[:]
    onx.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(seen.items()))
    return onx


def save(onx, name):
    path = os.path.join(MODELS, name)
    dedupe_opsets(onx)
    onnx.checker.check_model(onx, full_check=True)
    check_ops(onx, name)
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    print(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")
    return path


def check_ops(onx, name):
    ops = {n.op_type for n in onx.graph.node}
    bad = ops & FORBIDDEN_OPS
    assert not bad, f"{name}: contains {sorted(bad)}, which tract cannot run"
    unknown = ops - TRACT_OPS
    assert not unknown, f"{name}: unexpected operators {sorted(unknown)}"
    for opset in onx.opset_import:
        want = TARGET_OPSET.get(opset.domain)
        assert want is not None and opset.version <= want, (
            f"{name}: opset {opset.domain or 'ai.onnx'} {opset.version}"
        )
    for node in onx.graph.node:
        if node.op_type == "TreeEnsembleClassifier":
            attrs = {a.name for a in node.attribute}
            # tract reads the plain float lists, not the *_as_tensor variants.
            assert {"nodes_values", "class_weights"} <= attrs, f"{name}: {attrs}"
            assert not any(a.endswith("_as_tensor") for a in attrs), f"{name}: {attrs}"
    opsets = ", ".join(f"{o.domain or 'ai.onnx'}={o.version}" for o in onx.opset_import)
    print(f"  operators: {', '.join(sorted(ops))}; opsets: {opsets}")


def session(path):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ins = ", ".join(f"{i.name} {i.type} {i.shape}" for i in sess.get_inputs())
    outs = ", ".join(f"{o.name} {o.type} {o.shape}" for o in sess.get_outputs())
    print(f"  inputs: {ins}")
    print(f"  outputs: {outs}")
    return sess


def write_sidecar(model_name, config):
    path = os.path.join(MODELS, model_name + ".json")
    with open(path, "w") as f:
        f.write(json.dumps(config, indent=2) + "\n")
    print(f"  wrote {os.path.relpath(path, ROOT)}")


# --------------------------------------------------------------------- data


def make_iris_csv():
    iris = load_iris()
    rows = [
        [str(i + 1)] + [repr(float(v)) for v in x]
        for i, x in enumerate(iris.data)
    ]
    path = os.path.join(DATA, "iris.csv")
    write_csv(path, ["id"] + IRIS_FEATURES, rows)
    return path


def make_diabetes_csv():
    diabetes = load_diabetes()
    assert list(diabetes.feature_names) == [
        "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"
    ], diabetes.feature_names
    rows = [
        [str(i + 1)] + [repr(float(v)) for v in x]
        for i, x in enumerate(diabetes.data[:DIABETES_ROWS])
    ]
    path = os.path.join(DATA, "diabetes.csv")
    write_csv(path, ["id"] + list(diabetes.feature_names), rows)
    return path


def make_half_plus_two_csv():
    path = os.path.join(DATA, "half_plus_two.csv")
    write_csv(path, ["x"], [["1.0"], ["2.0"], ["5.0"]])
    return path


def read_features(path, feature_names):
    header, rows = read_csv(path)
    cols = [header.index(c) for c in feature_names]
    ids = [r[header.index("id")] for r in rows] if "id" in header else None
    x64 = np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float64)
    assert_no_double_rounding(x64)
    return ids, x64, x64.astype(np.float32)


# ------------------------------------------------------------------- models


def iris_models(iris_csv):
    iris = load_iris()
    X, y = iris.data, iris.target
    assert sorted(set(y.tolist())) == [0, 1, 2]
    # The CSV must hold exactly sklearn's values.
    ids, x64, x32 = read_features(iris_csv, IRIS_FEATURES)
    assert np.array_equal(x64, X), "iris.csv does not round-trip"
    assert ids == [str(i) for i in range(1, 151)]

    models = {
        "iris_logreg": LogisticRegression(max_iter=1000, random_state=0),
        "iris_forest": RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0),
        # alpha=1.0 (L2) keeps the softmax away from saturation: without it most
        # rows get probabilities of exactly 1.0/0.0, which makes a poor test.
        "iris_mlp": MLPClassifier(hidden_layer_sizes=(8,), solver="lbfgs", alpha=1.0,
                                  max_iter=2000, random_state=0),
    }
    for name, model in models.items():
        print(f"{name}:")
        model.fit(X, y)
        acc = model.score(X, y)
        print(f"  sklearn accuracy on iris: {acc:.4f}")
        onx = convert_sklearn(
            model,
            name=name,
            initial_types=[("features", FloatTensorType([None, 4]))],
            options={id(model): {"zipmap": False}},
            target_opset=TARGET_OPSET,
        )
        path = save(onx, f"{name}.onnx")
        sess = session(path)
        assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]
        assert [i.name for i in sess.get_inputs()] == ["features"]
        label, proba = sess.run(["label", "probabilities"], {"features": x32})
        assert label.dtype == np.int64 and label.shape == (150,), (label.dtype, label.shape)
        assert proba.dtype == np.float32 and proba.shape == (150, 3), (proba.dtype, proba.shape)
        ort_acc = float(np.mean(label == y))
        agree = float(np.mean(label == model.predict(x64)))
        print(f"  onnxruntime accuracy on iris: {ort_acc:.4f}; agreement with sklearn: {agree:.4f}")
        assert agree >= 0.95, f"{name}: onnxruntime agrees with sklearn on only {agree:.2%}"
        np.testing.assert_allclose(proba, model.predict_proba(x64), atol=1e-4)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
        # No near-ties between the top two classes, so another runtime (tract)
        # whose float rounding differs slightly still picks the same labels.
        top2 = np.sort(proba, axis=1)[:, -2:]
        margin = float((top2[:, 1] - top2[:, 0]).min())
        print(f"  smallest gap between the two most likely classes: {margin:.4f}")
        assert margin >= 1e-3, f"{name}: near-tie in probabilities ({margin})"
        write_sidecar(f"{name}.onnx", {
            "features": IRIS_FEATURES,
            "passthrough": ["id"],
            "classes": IRIS_CLASSES,
        })
        write_csv(
            os.path.join(REFERENCE, f"{name}.csv"),
            ["id", "label", "probability_0", "probability_1", "probability_2"],
            [[i, str(int(l))] + [f32_repr(p) for p in ps]
             for i, l, ps in zip(ids, label, proba)],
        )


def iris_named_model(iris_csv):
    """A classifier that names its classes itself and carries its own configuration."""
    print("iris_named:")
    iris = load_iris()
    X, y = iris.data, np.asarray(IRIS_CLASSES)[iris.target]
    ids, _, x32 = read_features(iris_csv, IRIS_FEATURES)
    model = LogisticRegression(max_iter=1000, random_state=0).fit(X, y)
    assert list(model.classes_) == IRIS_CLASSES
    onx = convert_sklearn(
        model,
        name="iris_named",
        initial_types=[("features", FloatTensorType([None, 4]))],
        options={id(model): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    labels = [a for n in onx.graph.node for a in n.attribute if a.name == "classlabels_strings"]
    assert [[s.decode() for s in a.strings] for a in labels] == [IRIS_CLASSES], labels
    helper.set_model_props(onx, {"sluice": json.dumps({"features": IRIS_FEATURES, "passthrough": ["id"]})})
    path = save(onx, "iris_named.onnx")
    sess = session(path)
    label, proba = sess.run(["label", "probabilities"], {"features": x32})
    assert label.dtype == object and list(label) == list(model.predict(X)), label[:5]
    np.testing.assert_allclose(proba, model.predict_proba(X), atol=1e-4)
    write_csv(
        os.path.join(REFERENCE, "iris_named.csv"),
        ["id", "label"] + [f"probabilities_{c}" for c in IRIS_CLASSES],
        [[i, l] + [f32_repr(p) for p in ps] for i, l, ps in zip(ids, label, proba)],
    )


def diabetes_model(diabetes_csv):
    print("diabetes_linreg:")
    diabetes = load_diabetes()
    X, y = diabetes.data, diabetes.target
    names = list(diabetes.feature_names)
    ids, x64, x32 = read_features(diabetes_csv, names)
    assert np.array_equal(x64, X[:DIABETES_ROWS]), "diabetes.csv does not round-trip"
    model = LinearRegression().fit(X, y)
    print(f"  sklearn R^2 on diabetes: {model.score(X, y):.4f}")
    onx = convert_sklearn(
        model,
        name="diabetes_linreg",
        initial_types=[("features", FloatTensorType([None, 10]))],
        target_opset=TARGET_OPSET,
    )
    path = save(onx, "diabetes_linreg.onnx")
    sess = session(path)
    assert [o.name for o in sess.get_outputs()] == ["variable"]
    (pred,) = sess.run(["variable"], {"features": x32})
    assert pred.dtype == np.float32 and pred.shape == (DIABETES_ROWS, 1), (pred.dtype, pred.shape)
    np.testing.assert_allclose(pred[:, 0], model.predict(x64), rtol=1e-4, atol=1e-3)
    r2 = 1 - np.sum((y[:DIABETES_ROWS] - pred[:, 0]) ** 2) / np.sum(
        (y[:DIABETES_ROWS] - y[:DIABETES_ROWS].mean()) ** 2)
    print(f"  onnxruntime R^2 on the {DIABETES_ROWS} CSV rows: {r2:.4f}")
    write_sidecar("diabetes_linreg.onnx", {"features": names, "passthrough": ["id"]})
    write_csv(
        os.path.join(REFERENCE, "diabetes_linreg.csv"),
        ["id", "variable"],
        [[i, f32_repr(v)] for i, v in zip(ids, pred[:, 0])],
    )


def half_plus_two_model(csv_path):
    print("half_plus_two:")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [
            helper.make_node("Div", ["x", "two"], ["half"], name="div"),
            helper.make_node("Add", ["half", "two"], ["y"], name="add"),
        ],
        "half_plus_two",
        [x],
        [y],
        initializer=[two],
    )
    onx = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        ir_version=8,
        producer_name="sluice models/make_models.py",
    )
    path = save(onx, "half_plus_two.onnx")
    sess = session(path)
    header, rows = read_csv(csv_path)
    assert header == ["x"]
    xs = np.array([[float(r[0])] for r in rows], dtype=np.float32)
    (out,) = sess.run(["y"], {"x": xs})
    assert out.dtype == np.float32 and out.shape == (3, 1)
    assert out[:, 0].tolist() == [2.5, 3.0, 4.5], out
    print(f"  1.0, 2.0, 5.0 -> {', '.join(map(str, out[:, 0].tolist()))}")
    write_csv(
        os.path.join(REFERENCE, "half_plus_two.csv"),
        ["x", "y"],
        [[r[0], f32_repr(v)] for r, v in zip(rows, out[:, 0])],
    )


# The example repository: (name, version, the model file it is a copy of).
REPOSITORY = [
    ("iris", 1, "iris_logreg.onnx"),
    ("iris", 2, "iris_mlp.onnx"),
    ("diabetes", 1, "diabetes_linreg.onnx"),
    ("half_plus_two", 1, "half_plus_two.onnx"),
]

# Models' own settings in the repository (<name>/config.json): `worker serve` serves the latest
# version of a model unless its version policy says otherwise; iris serves both of its versions.
MODEL_SETTINGS = {
    "iris": {"version_policy": {"latest": {"num_versions": 2}}},
}


def write_repository():
    """Lays the example models out as a model repository, <name>/<version>/model.onnx with its
    sidecar model.onnx.json, as the worker and the model servers read it."""
    root = os.path.join(MODELS, "repository")
    shutil.rmtree(root, ignore_errors=True)
    print("repository:")
    for name, version, source in REPOSITORY:
        folder = os.path.join(root, name, str(version))
        os.makedirs(folder)
        shutil.copyfile(os.path.join(MODELS, source), os.path.join(folder, "model.onnx"))
        sidecar = os.path.join(MODELS, source + ".json")
        if os.path.exists(sidecar):
            shutil.copyfile(sidecar, os.path.join(folder, "model.onnx.json"))
        print(f"  {name}/{version}/model.onnx = {source}")
    for name, settings in MODEL_SETTINGS.items():
        with open(os.path.join(root, name, "config.json"), "w") as f:
            json.dump(settings, f, indent=2)
            f.write("\n")
        print(f"  {name}/config.json = {json.dumps(settings)}")


def main():
    print(f"python {sys.version.split()[0]}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__}")
    os.makedirs(REFERENCE, exist_ok=True)
    os.makedirs(DATA, exist_ok=True)
    print("data:")
    iris_csv = make_iris_csv()
    diabetes_csv = make_diabetes_csv()
    hp2_csv = make_half_plus_two_csv()
    iris_models(iris_csv)
    iris_named_model(iris_csv)
    diabetes_model(diabetes_csv)
    half_plus_two_model(hp2_csv)
    write_repository()
    make_image_models()
    print("all checks passed")


if __name__ == "__main__":
    main()
