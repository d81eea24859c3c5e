"""The online alternative `make bench-serve` measures `worker serve` against: what a Python user
would write to serve the same ONNX models, FastAPI on uvicorn (uvloop and httptools) with
onnxruntime, answering TensorFlow Serving's predict request as `worker serve` does.

    MODEL_REPOSITORY=models/repository uvicorn bench.fastapi_server:app --port 8081

Every `<name>/<version>/model.onnx` of the repository is loaded once, with one onnxruntime
thread (the server gets one core). The handler is `async def`: for models that run in
microseconds it beats a sync handler, which hops to a thread pool for each request.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


def load(root: Path) -> dict[tuple[str, str], ort.InferenceSession]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return {
        (model.parent.parent.name, model.parent.name): ort.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        for model in sorted(root.glob("*/*/model.onnx"))
    }


SESSIONS = load(Path(os.environ.get("MODEL_REPOSITORY", "models/repository")))
app = FastAPI()


class PredictRequest(BaseModel):
    instances: list


@app.get("/ping")
async def ping() -> dict:
    return {"status": "Healthy"}


@app.post("/v1/models/{name}/versions/{version}:predict")
async def predict(name: str, version: str, request: PredictRequest) -> dict:
    session = SESSIONS.get((name, version))
    if session is None:
        raise HTTPException(status_code=404, detail=f"no model {name} version {version}")
    features = np.asarray(request.instances, dtype=np.float32)
    if features.ndim == 1:
        features = features.reshape(-1, 1)
    outputs = session.run(None, {session.get_inputs()[0].name: features})
    names = [output.name for output in session.get_outputs()]
    if len(outputs) == 1:
        return {"predictions": outputs[0].reshape(len(features), -1).squeeze(-1).tolist()}
    columns = [output.tolist() for output in outputs]
    return {"predictions": [dict(zip(names, row)) for row in zip(*columns)]}
