"""Small text encoders for the tests, in the layout the Hugging Face hub ships sentence-transformers
models in, with onnxruntime's answers beside them.

Run from the repository root with the pinned venv of tools/requirements-models.txt (make models,
which calls it; or `.tools/models/bin/python models/text_models.py`). Nothing is downloaded: the
WordPiece tokenizer is built here with the `tokenizers` package (the library the hub's
tokenizer.json files come from) from sentences drawn from word lists, and the encoder is a
two-layer BERT (embeddings, self-attention with the padding mask, GELU feed-forward, layer norms)
written with onnx.helper from seeded random weights, with BERT's inputs (`input_ids`,
`attention_mask`, `token_type_ids`) and output (`last_hidden_state`). For each folder in
models/text/ it writes:

  model.onnx, tokenizer.json, tokenizer_config.json, special_tokens_map.json, config.json,
  modules.json, sentence_bert_config.json, 1_Pooling/config.json   the model folder, as
                       sentence-transformers saves one (a Normalize module in modules.json
                       when the embeddings are normalised); bert_tiny_cls also has sluice's
                       sluice.json (the id passes through)
  texts.csv            id, text: sentences, then hard texts (empty, a space, quotes, tabs, a line
                       break, accents, CJK, emoji, 3,000 words)
  expected.csv         id, embedding_0 ... : the texts tokenized by `tokenizers` (truncated to
                       max_seq_length, padded per batch), run by onnxruntime, pooled and
                       normalised as sentence-transformers' Pooling and Normalize modules do

Seeded: a re-run writes the same files.
"""

import csv
import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = os.path.join(ROOT, "models", "text")
HIDDEN, HEADS, LAYERS, FEED_FORWARD, POSITIONS = 32, 4, 2, 64, 128
MAX_SEQ_LENGTH = 48
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

TOPICS = {
    "sports": "match goal team players coach season league score win defeat striker keeper final cup stadium fans referee",
    "markets": "stocks bonds shares investors prices rally inflation rates earnings trading futures dividend currency bank profit",
    "weather": "rain storm wind forecast sunny clouds temperature snow frost heatwave humidity thunder showers cold warm",
}
COMMON = "the a of and to in on for with today this week after before new big small very more café naïve 東京 天気".split()
HARD_TEXTS = [
    "",
    " ",
    'Goal! The STRIKER scored, and the fans cheered: "what a match"',
    "Stocks\tfell;\tbonds rose\t(inflation) — prices, prices, PRICES",
    "Café crème, naïve façade: Météo says rain 🌧️ and snow ❄️ tomorrow",
    "東京の天気は雨です rain 雨 storm",
    "line one about the league\nline two about the cup final",
    "Ünïcödé ÀÉÎÕÜ weather, SUNNY & warm 😎",
]


def topic_sentences(count, seed):
    """`count` sentences of 3 to 24 words, each mostly from one topic's words: (text, topic)."""
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)
    out = []
    for _ in range(count):
        topic = names[rng.integers(len(names))]
        pools = [TOPICS[topic].split(), COMMON]
        chosen = []
        for _ in range(rng.integers(3, 25)):
            pool = pools[rng.choice(2, p=[0.7, 0.3])]
            chosen.append(pool[rng.integers(len(pool))])
        out.append((" ".join(chosen), topic))
    return out


def sentences(count, seed):
    """The texts of `topic_sentences`."""
    return [text for text, _ in topic_sentences(count, seed)]


def train_tokenizer(corpus):
    """A BERT WordPiece tokenizer (lower case, accents stripped), as BertTokenizerFast saves one:
    its vocabulary the special tokens, every character alone and as a continuation (`##x`), and
    the corpus's 250 most frequent words (ties by word), so that a re-run writes the same file."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = {}
    for text in corpus:
        normalized = tokenizer.normalizer.normalize_str(text)
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized):
            counts[word] = counts.get(word, 0) + 1
    chars = sorted({c for word in counts for c in word})
    words = [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if len(w) > 1][:250]
    vocab = {token: i for i, token in enumerate(SPECIAL + chars + [f"##{c}" for c in chars] + words)}
    tokenizer.model = models.WordPiece(vocab, unk_token="[UNK]")
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


def bert(vocab_size, seed, dims=(HIDDEN, HEADS, LAYERS, FEED_FORWARD, POSITIONS), weights=None):
    """A BERT encoder graph: [batch, sequence] ids, mask and token types to [batch, sequence,
    hidden]. `dims` are (hidden, heads, layers, feed-forward, positions); the parameters are
    `weights(name)` when given (a checkpoint's, by this graph's names: see bench/minilm.py), else
    drawn from `seed`."""
    HIDDEN, HEADS, LAYERS, FEED_FORWARD, POSITIONS = dims
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def param(name, make):
        value = weights(name) if weights is not None else make()
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def weight(name, *shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        return param(name, lambda: rng.standard_normal(shape) * scale)

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def layer_norm(x, prefix):
        gamma = param(f"{prefix}.gamma", lambda: 1.0 + 0.1 * rng.standard_normal(HIDDEN))
        beta = param(f"{prefix}.beta", lambda: 0.1 * rng.standard_normal(HIDDEN))
        return node("LayerNormalization", [x, gamma, beta], f"{prefix}.out", axis=-1, epsilon=1e-12)

    def dense(x, prefix, n_in, n_out):
        w = weight(f"{prefix}.w", n_in, n_out)
        b = param(f"{prefix}.b", lambda: 0.02 * rng.standard_normal(n_out))
        return node("Add", [node("MatMul", [x, w], f"{prefix}.matmul"), b], f"{prefix}.out")

    head = HIDDEN // HEADS
    const("shape_heads", [0, 0, HEADS, head], np.int64)
    const("shape_hidden", [0, 0, HIDDEN], np.int64)
    const("one", 1.0)
    const("minus_big", -3.4028234663852886e38)
    const("scale", 1.0 / np.sqrt(head))
    const("sqrt_half", 1.0 / np.sqrt(2.0))
    const("half", 0.5)
    const("axes_1_2", [1, 2], np.int64)
    const("zero_i", 0, np.int64)
    const("one_i", 1, np.int64)
    const("index_1", [1], np.int64)

    words = node("Gather", [weight("word_embeddings", vocab_size, HIDDEN, scale=0.5), "input_ids"], "words")
    types = node("Gather", [weight("token_type_embeddings", 2, HIDDEN, scale=0.5), "token_type_ids"], "types")
    length = node("Squeeze", [node("Gather", [node("Shape", ["input_ids"], "ids_shape"), "index_1"], "length_1d")], "length")
    positions = node("Range", ["zero_i", length, "one_i"], "positions")
    position = node("Gather", [weight("position_embeddings", POSITIONS, HIDDEN, scale=0.5), positions], "position")
    hidden = node("Add", [node("Add", [words, types], "words_types"), position], "embedded")
    hidden = layer_norm(hidden, "embeddings.norm")
    # The padding mask as an additive bias: 0 where attended, the float minimum where padding.
    mask = node("Cast", [node("Unsqueeze", ["attention_mask", "axes_1_2"], "mask_4d")], "mask_float", to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", ["one", mask], "mask_inverted"), "minus_big"], "mask_bias")
    for layer in range(LAYERS):
        p = f"layer{layer}"

        def heads(x, name):
            return node("Transpose", [node("Reshape", [x, "shape_heads"], f"{name}.split")], f"{name}.heads", perm=[0, 2, 1, 3])

        q = heads(dense(hidden, f"{p}.query", HIDDEN, HIDDEN), f"{p}.q")
        k = heads(dense(hidden, f"{p}.key", HIDDEN, HIDDEN), f"{p}.k")
        v = heads(dense(hidden, f"{p}.value", HIDDEN, HIDDEN), f"{p}.v")
        kt = node("Transpose", [k], f"{p}.kt", perm=[0, 1, 3, 2])
        scores = node("Add", [node("Mul", [node("MatMul", [q, kt], f"{p}.qk"), "scale"], f"{p}.scaled"), bias], f"{p}.scores")
        probs = node("Softmax", [scores], f"{p}.probs", axis=-1)
        context = node("Transpose", [node("MatMul", [probs, v], f"{p}.context_heads")], f"{p}.context_t", perm=[0, 2, 1, 3])
        context = node("Reshape", [context, "shape_hidden"], f"{p}.context")
        attended = node("Add", [dense(context, f"{p}.attention_out", HIDDEN, HIDDEN), hidden], f"{p}.attention_residual")
        hidden = layer_norm(attended, f"{p}.attention_norm")
        inner = dense(hidden, f"{p}.intermediate", HIDDEN, FEED_FORWARD)
        erf = node("Erf", [node("Mul", [inner, "sqrt_half"], f"{p}.gelu_scaled")], f"{p}.gelu_erf")
        gelu = node("Mul", [node("Mul", [inner, "half"], f"{p}.gelu_half"), node("Add", [erf, "one"], f"{p}.gelu_plus")], f"{p}.gelu")
        out = node("Add", [dense(gelu, f"{p}.output", FEED_FORWARD, HIDDEN), hidden], f"{p}.output_residual")
        hidden = layer_norm(out, f"{p}.output_norm")
    nodes.append(helper.make_node("Identity", [hidden], ["last_hidden_state"], name="last_hidden_state"))
    ids = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch_size", "sequence_length"])
    graph = helper.make_graph(
        nodes,
        "bert",
        [ids("input_ids"), ids("attention_mask"), ids("token_type_ids")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch_size", "sequence_length", HIDDEN])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, producer_name="sluice models/text_models.py")
    onnx.checker.check_model(model)
    return model


def pool(hidden, mask, mode):
    """sentence-transformers' Pooling of token embeddings `hidden` [n, t, d] with `mask` [n, t]."""
    m = mask[:, :, None].astype(np.float32)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return np.where(m > 0, hidden, -1e9).max(axis=1)
    if mode == "lasttoken":
        last = mask.sum(axis=1) - 1
        return hidden[np.arange(len(hidden)), last]
    summed, counts = (hidden * m).sum(axis=1), np.clip(m.sum(axis=1), 1e-9, None)
    if mode == "mean":
        return summed / counts
    if mode == "mean_sqrt_len":
        return summed / np.sqrt(counts)
    raise ValueError(mode)


POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


def write_folder(name, onnx_model, tokenizer, mode, normalize, texts, sluice=None):
    folder = os.path.join(TEXT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.join(folder, "1_Pooling"))
    onnx.save(onnx_model, os.path.join(folder, "model.onnx"))
    tokenizer.save(os.path.join(folder, "tokenizer.json"))

    def dump(path, value):
        with open(os.path.join(folder, path), "w") as f:
            json.dump(value, f, indent=2, ensure_ascii=False)
            f.write("\n")

    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
    dump("special_tokens_map.json", specials)
    dump("tokenizer_config.json", {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512, **specials})
    dump("config.json", {
        "model_type": "bert", "architectures": ["BertModel"], "hidden_size": HIDDEN, "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS, "intermediate_size": FEED_FORWARD, "max_position_embeddings": POSITIONS,
        "vocab_size": tokenizer.get_vocab_size(), "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
    })
    dump("sentence_bert_config.json", {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False})
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    dump("modules.json", modules)
    pooling = {"word_embedding_dimension": HIDDEN, **{key: key == POOLING_KEYS[mode] for key in POOLING_KEYS.values()}}
    pooling["pooling_mode_weightedmean_tokens"] = False
    pooling["include_prompt"] = True
    dump("1_Pooling/config.json", pooling)
    if sluice is not None:
        dump("sluice.json", sluice)

    with open(os.path.join(folder, "texts.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "text"])
        for i, text in enumerate(texts, 1):
            w.writerow([i, text])
    # onnxruntime's answers, in batches of 16 padded to their longest text, as
    # SentenceTransformer.encode runs them.
    encoder = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    encoder.enable_truncation(MAX_SEQ_LENGTH)
    encoder.enable_padding(pad_id=encoder.token_to_id("[PAD]"), pad_token="[PAD]")
    session = ort.InferenceSession(os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"])
    rows = []
    for start in range(0, len(texts), 16):
        batch = encoder.encode_batch(texts[start:start + 16])
        feeds = {
            "input_ids": np.array([e.ids for e in batch], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in batch], dtype=np.int64),
        }
        hidden = session.run(None, feeds)[0]
        pooled = pool(hidden, feeds["attention_mask"], mode)
        if normalize:
            pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        rows.extend(pooled.tolist())
    with open(os.path.join(folder, "expected.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", *(f"embedding_{i}" for i in range(HIDDEN))])
        for i, row in enumerate(rows, 1):
            w.writerow([i, *(repr(float(np.float32(v))) for v in row)])
    truncated = sum(len(e.ids) > MAX_SEQ_LENGTH for e in Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).encode_batch(texts))
    print(f"  {name}: {mode} pooling{', normalised' if normalize else ''}; {len(texts)} texts, {truncated} truncated")


def main():
    print(f"text encoders -> {os.path.relpath(TEXT, ROOT)}")
    corpus = sentences(2000, seed=0) + HARD_TEXTS
    tokenizer = train_tokenizer(corpus)
    model = bert(tokenizer.get_vocab_size(), seed=1)
    long_text = " ".join(" ".join(sentences(400, seed=3)).split()[:3000])
    texts = sentences(40, seed=2) + HARD_TEXTS + [long_text]
    write_folder("bert_tiny_mean", model, tokenizer, "mean", True, texts)
    # With sluice's own configuration: the id passes through.
    write_folder("bert_tiny_cls", model, tokenizer, "cls", False, texts, sluice={"passthrough": ["id"]})


if __name__ == "__main__":
    main()
