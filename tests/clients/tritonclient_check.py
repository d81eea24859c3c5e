"""Drives `worker serve` with Triton's official HTTP client, as a KServe v2 user would.

    python tests/clients/tritonclient_check.py HOST:PORT REPOSITORY_ROOT [HOST:PORT]

Checks health, metadata and readiness, then runs every iris row through version 1 (the
logistic regression) with the client's defaults (binary tensors both ways) and with JSON
tensors, and compares the answers with onnxruntime's reference outputs; runs half_plus_two; and
checks that a malformed request raises the client's error with the server's message; and sends
images to SqueezeNet as a BYTES input, checking its top 5 against onnxruntime's. With a second
address, that of a server of the zoo's ColumnTransformer as model "wine", sends its held-out rows
as three typed inputs (BYTES, INT64, FP32) and compares with onnxruntime's outputs.

The server needs an API key ($SLUICE_API_KEY), which the client sends on every request through a
plugin, as Triton's clients add headers; first it checks that health is open and that inference
without a key, or with a wrong one, gets 401.
Exits non-zero on the first failure.
"""

import csv
import json
import os
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from bearer import BearerKey


def expect_status(call, status):
    try:
        call()
    except InferenceServerException as error:
        assert error.status() == status, (error.status(), error.message())
        return error.message()
    raise AssertionError(f"no {status}")


def refuses_strangers(url):
    stranger = httpclient.InferenceServerClient(url=url)
    assert stranger.is_server_live() and stranger.is_server_ready(), "health checks are open"
    message = expect_status(lambda: stranger.get_model_metadata("iris"), "401")
    assert "API key" in message, message
    stranger.register_plugin(BearerKey("not-the-key-0123456789"))
    expect_status(lambda: stranger.get_model_metadata("iris"), "401")


def rows(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [row for row in reader]


def main():
    url, root = sys.argv[1], sys.argv[2]
    refuses_strangers(url)
    client = httpclient.InferenceServerClient(url=url)
    client.register_plugin(BearerKey(os.environ["SLUICE_API_KEY"]))
    assert client.is_server_live(), "server live"
    assert client.is_server_ready(), "server ready"
    assert client.is_model_ready("iris"), "iris ready"
    assert client.is_model_ready("iris", model_version="1"), "iris version 1 ready"
    assert not client.is_model_ready("absent"), "an absent model is not ready"
    server = client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"], server
    metadata = client.get_model_metadata("iris", model_version="1")
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}], metadata
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"], metadata

    data = rows(os.path.join(root, "examples", "data", "iris.csv"))
    reference = rows(os.path.join(root, "models", "reference", "iris_logreg.csv"))
    features = np.array([[float(v) for v in row[1:5]] for row in data], dtype=np.float32)
    want_labels = np.array([int(row[1]) for row in reference])
    want_probabilities = np.array([[float(v) for v in row[2:5]] for row in reference], dtype=np.float32)

    # The client's defaults: binary input, binary outputs.
    features_input = httpclient.InferInput("features", list(features.shape), "FP32")
    features_input.set_data_from_numpy(features)
    result = client.infer("iris", [features_input], model_version="1", request_id="all-iris")
    assert result.get_response()["id"] == "all-iris"
    assert np.array_equal(result.as_numpy("label"), want_labels), result.as_numpy("label")
    got = result.as_numpy("probabilities")
    assert got.shape == (150, 3) and got.dtype == np.float32, (got.shape, got.dtype)
    assert np.allclose(got, want_probabilities, rtol=1e-5, atol=1e-6), np.abs(got - want_probabilities).max()

    # JSON both ways, one output asked for.
    features_input = httpclient.InferInput("features", [5, 4], "FP32")
    features_input.set_data_from_numpy(features[:5], binary_data=False)
    wanted = [httpclient.InferRequestedOutput("probabilities", binary_data=False)]
    result = client.infer("iris", [features_input], model_version="1", outputs=wanted)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["probabilities"]
    assert np.allclose(result.as_numpy("probabilities"), want_probabilities[:5], rtol=1e-5, atol=1e-6)

    # The latest version (2, the MLP) answers too, with three classes.
    result = client.infer("iris", [features_input])
    assert result.get_response()["model_version"] == "2", result.get_response()
    assert result.as_numpy("probabilities").shape == (5, 3)

    # half_plus_two: y = x / 2 + 2.
    x = np.array([1.0, 2.0, 5.0], dtype=np.float32)
    x_input = httpclient.InferInput("x", [3], "FP32")
    x_input.set_data_from_numpy(x)
    y = client.infer("half_plus_two", [x_input]).as_numpy("y")
    assert y.tolist() == [2.5, 3.0, 4.5], y

    # An image model: encoded images as a BYTES input (binary, the client's default); the top 5
    # classes and their probabilities back, as onnxruntime ranks them (models/reference/images.json).
    with open(os.path.join(root, "models", "reference", "images.json")) as f:
        expected = json.load(f)["squeezenet"]
    names = ["flower.png", "flower.webp"]
    images = []
    for name in names:
        with open(os.path.join(root, "tests", "data", "images", name), "rb") as f:
            images.append(f.read())
    metadata = client.get_model_metadata("squeezenet")
    assert metadata["inputs"] == [{"name": "data_0", "datatype": "BYTES", "shape": [-1]}], metadata
    image_input = httpclient.InferInput("data_0", [len(images)], "BYTES")
    image_input.set_data_from_numpy(np.array(images, dtype=np.object_))
    result = client.infer("squeezenet", [image_input])
    classes, probabilities = result.as_numpy("classes"), result.as_numpy("probabilities")
    assert classes.shape == (2, 5) and probabilities.shape == (2, 5), (classes.shape, probabilities.shape)
    for i, name in enumerate(names):
        assert [str(c) for c in classes[i]] == [p["class"] for p in expected[name]], (name, classes[i])
        want = np.array([p["probability"] for p in expected[name]])
        assert np.abs(probabilities[i] - want).max() < 1e-4, (name, probabilities[i], want)

    # A malformed request: the client raises with the server's message.
    short = httpclient.InferInput("features", [1, 3], "FP32")
    short.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    try:
        client.infer("iris", [short])
    except InferenceServerException as error:
        assert "the model takes [rows, 4]" in error.message(), error.message()
        assert error.status() == "400", error.status()
    else:
        raise AssertionError("a [1, 3] input to iris was accepted")
    try:
        client.infer("absent", [x_input])
    except InferenceServerException as error:
        assert error.status() == "404", error.status()
    else:
        raise AssertionError("an absent model answered")
    if len(sys.argv) > 3:
        typed = httpclient.InferenceServerClient(url=sys.argv[3])
        typed.register_plugin(BearerKey(os.environ["SLUICE_API_KEY"]))
        typed_columns(typed, root)
    print("tritonclient: all checks passed")


def typed_columns(client, root):
    """A model of several typed inputs: one tensor per column, text as BYTES."""
    name = "column_transformer_int_categories_ignore_unknown"
    data = rows(os.path.join(root, "models", "zoo", name + ".csv"))
    expected = rows(os.path.join(root, "models", "zoo", name + ".expected.csv"))
    metadata = client.get_model_metadata("wine")
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("colour", "BYTES"), ("grade", "INT64"), ("alcohol", "FP32")
    ], metadata
    columns = [
        ("colour", "BYTES", np.array([[row[1].encode()] for row in data], dtype=np.object_)),
        ("grade", "INT64", np.array([[int(row[2])] for row in data], dtype=np.int64)),
        ("alcohol", "FP32", np.array([[float(row[3])] for row in data], dtype=np.float32)),
    ]
    for binary in (True, False):
        inputs = []
        for column, datatype, values in columns:
            tensor = httpclient.InferInput(column, list(values.shape), datatype)
            tensor.set_data_from_numpy(values, binary_data=binary)
            inputs.append(tensor)
        result = client.infer("wine", inputs)
        labels = result.as_numpy("output_label")
        assert [int(v) for v in labels] == [int(row[1]) for row in expected], labels
        want = np.array([[float(v) for v in row[2:5]] for row in expected], dtype=np.float32)
        got = result.as_numpy("output_probability")
        assert np.allclose(got, want, rtol=1e-5, atol=1e-6), np.abs(got - want).max()


if __name__ == "__main__":
    main()
