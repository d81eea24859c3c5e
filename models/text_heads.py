"""Small transformers with task heads for the tests, as optimum and sentence-transformers export
them from the Hugging Face hub, with the Python libraries' own answers beside them.

Run from the repository root with the pinned venv of tools/requirements-models.txt (make models
calls it after text_models.py). Needs torch (the only script that does; CI never runs it).
Nothing is downloaded: each model is a two-layer BERT of transformers' own classes, trained here
for a few hundred steps on the topic sentences of text_models.py (so that its answers are
decisive, not coin flips), with text_models.py's WordPiece tokenizer, and exported with
torch.onnx. For each folder in models/text/ it writes:

  model.onnx, config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json
                       the folder as `optimum-cli export onnx` leaves it (config.json's id2label
                       and problem_type name the classes and the activation)
  texts.csv            id, text (and text_pair for the reranker): held-out sentences, then the
                       hard texts (empty, a space, quotes, tabs, accents, CJK, emoji, 3,000 words)
  expected.csv         the answers of the library a user runs such a model with:
    bert_tiny_topic     transformers' pipeline("text-classification", top_k=None): label,
                        probabilities_<label> (softmax: one topic a text)
    bert_tiny_topics    the same for a multi-label head (sigmoid: the topics a text mentions)
    bert_tiny_reranker  sentence-transformers' CrossEncoder.predict: score (sigmoid of the one
                        logit), for (text, text_pair) pairs
    bert_tiny_ner       transformers' pipeline("token-classification",
                        aggregation_strategy="simple"): entities, a JSON array a row

Seeded: a re-run writes the same files.
"""

import csv
import json
import os
import shutil
import tempfile

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification, PreTrainedTokenizerFast, pipeline

from text_models import COMMON, HARD_TEXTS, HEADS, HIDDEN, LAYERS, FEED_FORWARD, POSITIONS, TEXT, TOPICS, sentences, topic_sentences, train_tokenizer

MAX_LENGTH = 64
TOPIC_NAMES = sorted(TOPICS)
STEPS, BATCH = 300, 32


def hub_tokenizer(tokenizer):
    """The tokenizer as transformers wraps it (what save_pretrained writes)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", model_max_length=MAX_LENGTH, model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def bert_config(vocab_size, **head):
    return BertConfig(
        vocab_size=vocab_size, hidden_size=HIDDEN, num_attention_heads=HEADS, num_hidden_layers=LAYERS,
        intermediate_size=FEED_FORWARD, max_position_embeddings=POSITIONS, **head,
        attn_implementation="eager",
    )


class ClassicMask(torch.nn.Module):
    """The model with the padding mask as transformers 4 (and so most ONNX files on the hub)
    exports it: `(1 - mask) * float32 min`, added to the attention scores. transformers 5 builds
    the mask from index arithmetic on the batch and sequence sizes, which tract cannot yet
    plan for sizes it does not know."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
        return self.model(input_ids=input_ids, attention_mask=bias, token_type_ids=token_type_ids).logits


def train(model, batches, loss_of, lr=2e-3, steps=STEPS):
    """A few hundred Adam steps, enough for decisive answers."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        inputs, target = batches(step)
        loss = loss_of(model(**inputs).logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    print(f"    trained {steps} steps, last loss {loss.item():.3f}")


def export(model, folder, pairs=False):
    """model.onnx as optimum exports a BERT: BERT's three inputs, `logits` out, dynamic axes."""
    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = torch.tensor([[2, 10, 11, 3, 12, 3] if pairs else [2, 10, 11, 3]])
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in names}
    logits_axes = {0: "batch_size", 1: "sequence_length"} if isinstance(model, BertForTokenClassification) else {0: "batch_size"}
    torch.onnx.export(
        ClassicMask(model).eval(), (sample, torch.ones_like(sample), torch.zeros_like(sample)), os.path.join(folder, "model.onnx"),
        input_names=names, output_names=["logits"], dynamic_axes={**axes, "logits": logits_axes}, opset_version=17,
        dynamo=False,
    )
    model.eval()


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def f32(value):
    return repr(float(np.float32(value)))


def test_texts():
    long_text = " ".join(" ".join(sentences(400, seed=3)).split()[:3000])
    return sentences(40, seed=12) + HARD_TEXTS + [long_text]


def fresh(name):
    folder = os.path.join(TEXT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    return folder


def save_hub_folder(folder, model, tokenizer):
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def classifier(name, tokenizer, vocab_size, multi_label):
    """A sequence classifier of the three topics: one topic a text (softmax), or every topic a
    text mentions (sigmoid), trained on single-topic sentences or on two sentences joined."""
    print(f"  {name}: {'multi-label' if multi_label else 'single-label'} text classification")
    labels = {i: t for i, t in enumerate(TOPIC_NAMES)}
    config = bert_config(vocab_size, num_labels=len(labels), id2label=labels, label2id={t: i for i, t in labels.items()},
                         problem_type="multi_label_classification" if multi_label else "single_label_classification")
    torch.manual_seed(1)
    model = BertForSequenceClassification(config)
    corpus = topic_sentences(6000, seed=10)
    rng = np.random.default_rng(11)

    def batches(step):
        picked = [corpus[i] for i in rng.integers(len(corpus), size=BATCH)]
        if multi_label:
            seconds = [corpus[i] for i in rng.integers(len(corpus), size=BATCH)]
            texts = [a if rng.random() < 0.4 else f"{a} {b}" for (a, _), (b, _) in zip(picked, seconds)]
            topics = [{t for t in TOPIC_NAMES if any(w in TOPICS[t].split() for w in text.split())} for text in texts]
            target = torch.tensor([[float(t in ts) for t in TOPIC_NAMES] for ts in topics])
        else:
            texts = [text for text, _ in picked]
            target = torch.tensor([TOPIC_NAMES.index(t) for _, t in picked])
        return tokenizer(texts, padding=True, truncation=True, return_tensors="pt"), target

    loss = torch.nn.BCEWithLogitsLoss() if multi_label else torch.nn.CrossEntropyLoss()
    train(model, batches, loss)
    folder = fresh(name)
    save_hub_folder(folder, model, tokenizer)
    export(model, folder)
    texts = test_texts()
    if multi_label:
        texts = texts[:20] + [f"{a} {b}" for a, b in zip(texts[20:40:2], texts[21:40:2])] + texts[40:]
    write_csv(os.path.join(folder, "texts.csv"), ["id", "text"], [[i, t] for i, t in enumerate(texts, 1)])
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None, device="cpu")
    rows = []
    for i, (text, answer) in enumerate(zip(texts, classify(texts, truncation=True, batch_size=16)), 1):
        scores = {a["label"]: a["score"] for a in answer}
        rows.append([i, answer[0]["label"], *(f32(scores[t]) for t in TOPIC_NAMES)])
    write_csv(os.path.join(folder, "expected.csv"), ["id", "label", *(f"probabilities_{t}" for t in TOPIC_NAMES)], rows)


def reranker(tokenizer, vocab_size):
    """A cross-encoder: how well a passage answers a query (a few words of a topic), one logit."""
    print("  bert_tiny_reranker: cross-encoder (one logit, text pairs)")
    from sentence_transformers import CrossEncoder

    config = bert_config(vocab_size, num_labels=1)
    torch.manual_seed(2)
    model = BertForSequenceClassification(config)
    corpus = topic_sentences(6000, seed=20)
    rng = np.random.default_rng(21)

    def query(topic):
        words = TOPICS[topic].split()
        return " ".join(words[i] for i in rng.integers(len(words), size=rng.integers(1, 4)))

    def batches(step):
        picked = [corpus[i] for i in rng.integers(len(corpus), size=BATCH)]
        # Half the pairs match.
        asked = [topic if rng.random() < 0.5 else TOPIC_NAMES[rng.integers(3)] for _, topic in picked]
        queries = [query(t) for t in asked]
        target = torch.tensor([[float(t == topic)] for t, (_, topic) in zip(asked, picked)])
        return tokenizer(queries, [text for text, _ in picked], padding=True, truncation=True, return_tensors="pt"), target

    train(model, batches, torch.nn.BCEWithLogitsLoss(), lr=1e-3, steps=1500)
    folder = fresh("bert_tiny_reranker")
    texts = test_texts()
    pairs = [(query(TOPIC_NAMES[i % 3]), text) for i, text in enumerate(texts)]
    pairs += [("", ""), (" ", "rain"), (texts[-1], "goal"), (texts[-1], texts[-1])]
    write_csv(os.path.join(folder, "texts.csv"), ["id", "text", "text_pair"], [[i, q, t] for i, (q, t) in enumerate(pairs, 1)])
    with tempfile.TemporaryDirectory() as saved:
        model.save_pretrained(saved)
        tokenizer.save_pretrained(saved)
        cross_encoder = CrossEncoder(saved, max_length=MAX_LENGTH, device="cpu")
        scores = cross_encoder.predict(pairs, batch_size=16)
        # The folder as sentence-transformers saves a cross-encoder (config.json names its
        # activation), its weights as ONNX.
        cross_encoder.save_pretrained(folder)
    for extra in os.listdir(folder):
        if extra.endswith((".safetensors", ".md")):
            os.remove(os.path.join(folder, extra))
    export(model, folder, pairs=True)
    write_csv(os.path.join(folder, "expected.csv"), ["id", "score"], [[i, f32(s)] for i, s in enumerate(scores, 1)])


def ner(tokenizer, vocab_size):
    """A token classifier tagging runs of a topic's words (B- the first, I- the rest)."""
    print("  bert_tiny_ner: token classification")
    labels = ["O"] + [f"{bi}-{t.upper()}" for t in TOPIC_NAMES for bi in "BI"]
    config = bert_config(vocab_size, num_labels=len(labels), id2label=dict(enumerate(labels)),
                         label2id={label: i for i, label in enumerate(labels)})
    torch.manual_seed(3)
    model = BertForTokenClassification(config)
    corpus = sentences(6000, seed=30)
    rng = np.random.default_rng(31)
    topic_of = {w: t for t in TOPIC_NAMES for w in TOPICS[t].split()}

    def word_tags(words):
        tags, previous = [], None
        for word in words:
            topic = topic_of.get(word)
            tags.append("O" if topic is None else f"{'I' if topic == previous else 'B'}-{topic.upper()}")
            previous = topic
        return tags

    def batches(step):
        texts = [corpus[i].split() for i in rng.integers(len(corpus), size=BATCH)]
        encoded = tokenizer(texts, is_split_into_words=True, padding=True, truncation=True, return_tensors="pt")
        target = torch.full(encoded["input_ids"].shape, -100)
        for row, words in enumerate(texts):
            tags, seen = word_tags(words), set()
            for position, word in enumerate(encoded.word_ids(row)):
                if word is None:
                    continue
                tag = tags[word]
                if word in seen and tag != "O":
                    tag = "I-" + tag[2:]
                seen.add(word)
                target[row, position] = labels.index(tag)
        return encoded, target

    train(model, batches, lambda logits, target: torch.nn.functional.cross_entropy(logits.reshape(-1, len(labels)), target.reshape(-1)))
    folder = fresh("bert_tiny_ner")
    save_hub_folder(folder, model, tokenizer)
    export(model, folder)
    texts = test_texts()
    write_csv(os.path.join(folder, "texts.csv"), ["id", "text"], [[i, t] for i, t in enumerate(texts, 1)])
    tag = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple", device="cpu")
    rows = []
    for i, text in enumerate(texts, 1):
        entities = [
            {"entity_group": e["entity_group"], "score": float(np.float32(e["score"])), "word": e["word"], "start": e["start"], "end": e["end"]}
            for e in (tag(text) if text.strip() else [])
        ]
        rows.append([i, json.dumps(entities, ensure_ascii=False)])
    write_csv(os.path.join(folder, "expected.csv"), ["id", "entities"], rows)


def main():
    print(f"text models with heads -> {os.path.relpath(TEXT)}")
    torch.set_num_threads(1)
    corpus = sentences(2000, seed=0) + HARD_TEXTS
    tokenizer = hub_tokenizer(train_tokenizer(corpus))
    vocab_size = tokenizer.backend_tokenizer.get_vocab_size()
    classifier("bert_tiny_topic", tokenizer, vocab_size, multi_label=False)
    classifier("bert_tiny_topics", tokenizer, vocab_size, multi_label=True)
    reranker(tokenizer, vocab_size)
    ner(tokenizer, vocab_size)


if __name__ == "__main__":
    main()
