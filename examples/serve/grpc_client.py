"""gRPC calls to try against `make serve` (worker serve's gRPC port, 127.0.0.1:8001), with
Triton's Python client, from the repository's root, with the keys `make serve` made:

    SLUICE_API_KEY=$(cat .serve/api-key) SLUICE_REPOSITORY_API_KEY=$(cat .serve/repository-api-key) \
        .tools/tritonclient/bin/python examples/serve/grpc_client.py [HOST:PORT]

It prints what the comment at its end shows; tests/serve_clients.rs runs it and checks that.
"""

import os
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import InferenceServerClientPlugin


class BearerKey(InferenceServerClientPlugin):
    """Sends the API key as `authorization: Bearer KEY` metadata with every call."""

    def __init__(self, key):
        self.key = key

    def __call__(self, request):
        request.headers["authorization"] = f"Bearer {self.key}"


url = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8001"
client = grpcclient.InferenceServerClient(url)
client.register_plugin(BearerKey(os.environ["SLUICE_API_KEY"]))
print("server ready:", client.is_server_ready())

# half_plus_two, y = x / 2 + 2: a [3] input answers a [3] output.
x = grpcclient.InferInput("x", [3], "FP32")
x.set_data_from_numpy(np.array([1.0, 2.0, 5.0], dtype=np.float32))
print("half_plus_two:", client.infer("half_plus_two", [x]).as_numpy("y").tolist())

# iris version 1 (the logistic regression), two rows: their labels and class probabilities.
features = grpcclient.InferInput("features", [2, 4], "FP32")
features.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 5.1, 1.8]], dtype=np.float32))
result = client.infer("iris", [features], model_version="1")
print("iris labels:", result.as_numpy("label").tolist())
print("iris probabilities:", [[round(float(p), 6) for p in row] for row in result.as_numpy("probabilities")])

# The repository: every version served, and its state (the repository API has its own key).
repository = grpcclient.InferenceServerClient(url)
repository.register_plugin(BearerKey(os.environ["SLUICE_REPOSITORY_API_KEY"]))
for model in repository.get_model_repository_index().models:
    print(f"{model.name} {model.version}: {model.state}")

# prints:
# server ready: True
# half_plus_two: [2.5, 3.0, 4.5]
# iris labels: [0, 2]
# iris probabilities: [[0.981657, 0.018343, 0.0], [0.000471, 0.235269, 0.76426]]
# diabetes 1: READY
# digits 1: READY
# half_plus_two 1: READY
# iris 1: READY
# iris 2: READY
# squeezenet 1: READY
