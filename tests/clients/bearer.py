"""The API key as Triton's clients send extra headers: a plugin that adds `authorization: Bearer
KEY` to every request, an HTTP header or gRPC metadata (both clients share the plugin type)."""

from tritonclient.grpc import InferenceServerClientPlugin


class BearerKey(InferenceServerClientPlugin):
    def __init__(self, key):
        self.key = key

    def __call__(self, request):
        request.headers["authorization"] = f"Bearer {self.key}"
