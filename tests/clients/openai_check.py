"""worker serve's /v1/embeddings with OpenAI's official Python client, as embedding users call it:
`OpenAI(base_url=..., api_key=...)`, then `client.embeddings.create`.

    openai_check.py HOST:PORT MODEL TEXTS_FILE

TEXTS_FILE holds one JSON list of texts. Prints one JSON object: the embeddings the client decoded
from the default request (base64) and from encoding_format="float", the usage, and the errors a
wrong key and an unknown model raise. The API key comes from SLUICE_API_KEY.
"""

import json
import os
import sys

import openai

address, model, texts_file = sys.argv[1:4]
texts = json.load(open(texts_file))
client = openai.OpenAI(base_url=f"http://{address}/v1", api_key=os.environ["SLUICE_API_KEY"], max_retries=0)

default = client.embeddings.create(model=model, input=texts)
floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
single = client.embeddings.create(model=model, input=texts[0])
assert [d.index for d in default.data] == list(range(len(texts)))
assert default.object == "list" and default.model == model

errors = {}
try:
    openai.OpenAI(base_url=f"http://{address}/v1", api_key="wrong-key", max_retries=0).embeddings.create(model=model, input="x")
except openai.AuthenticationError as e:
    errors["wrong_key"] = [e.status_code, e.code]
try:
    client.embeddings.create(model="no-such-model", input="x")
except openai.NotFoundError as e:
    errors["unknown_model"] = [e.status_code, e.code]
try:
    client.embeddings.create(model=model, input=[[1, 2, 3]])
except openai.BadRequestError as e:
    errors["token_ids"] = [e.status_code, e.body["message"] if isinstance(e.body, dict) else str(e.body)]

json.dump({
    "base64": [d.embedding for d in default.data],
    "float": [d.embedding for d in floats.data],
    "single": single.data[0].embedding,
    "usage": [default.usage.prompt_tokens, default.usage.total_tokens],
    "errors": errors,
}, sys.stdout)
