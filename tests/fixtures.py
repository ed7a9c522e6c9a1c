"""Tiny randomly initialised models and synthetic data, built at test time (nothing is downloaded)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

TOPICS = {
    "sport": ["team", "goal", "match", "player", "coach", "ball", "league", "score"],
    "food": ["bread", "soup", "chef", "kitchen", "salt", "oven", "recipe", "flavour"],
    "tech": ["server", "code", "chip", "network", "model", "cloud", "kernel", "data"],
}
VERBS = ["likes", "builds", "moves", "wins", "finds", "checks", "makes", "sees"]
ADJ = ["quick", "quiet", "bright", "heavy", "small", "large", "old", "new"]
FILLER = ["the", "a", "with", "and", "near", "every", "today", "again"]


def sentence(rng: random.Random, topic: str) -> str:
    words = TOPICS[topic]
    return (
        f"the {rng.choice(ADJ)} {rng.choice(words)} {rng.choice(VERBS)} "
        f"{rng.choice(FILLER)} {rng.choice(words)} {rng.choice(FILLER)} {rng.choice(words)}"
    )


def vocabulary() -> list[str]:
    words = {w for ws in TOPICS.values() for w in ws} | set(VERBS) | set(ADJ) | set(FILLER)
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_data(root: Path, seed: int = 0, n_train: int = 96, n_eval: int = 48) -> dict[str, Path]:
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    root.mkdir(parents=True, exist_ok=True)

    def labelled(n: int) -> list[dict]:
        rows = []
        for i in range(n):
            topic = topics[i % len(topics)]
            rows.append({"text": sentence(rng, topic), "label": topic})
        return rows

    pairs = []
    for i in range(n_eval):
        t1, t2 = topics[i % 3], topics[(i + (i % 2)) % 3]
        pairs.append({"text_a": sentence(rng, t1), "text_b": sentence(rng, t2), "score": 1.0 if t1 == t2 else 0.0})
    return {
        "train": write_jsonl(root / "train.jsonl", [{"text": r["text"]} for r in labelled(n_train)]),
        "train_labelled": write_jsonl(root / "train_labelled.jsonl", labelled(n_train)),
        "eval_text": write_jsonl(root / "eval_text.jsonl", [{"text": r["text"]} for r in labelled(n_eval)]),
        "eval_cls": write_jsonl(root / "eval_cls.jsonl", labelled(n_eval)),
        "eval_sts": write_jsonl(root / "eval_sts.jsonl", pairs),
    }


def _bert_tokenizer(path: Path):
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocabulary()) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocabulary())}, do_lower_case=True)


def make_bert(path: Path, *, classifier: bool = False, layers: int = 4, seed: int = 0) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    tok = _bert_tokenizer(path)
    labels = sorted(TOPICS)
    cfg = BertConfig(
        vocab_size=len(vocabulary()), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
        # A wide init makes layers differ, so that dropping one changes outputs measurably.
        initializer_range=0.1 if classifier else 0.2,
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
    )
    model = BertForSequenceClassification(cfg) if classifier else BertModel(cfg)
    if classifier:
        _fit_topics(model, tok, seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _fit_topics(model, tok, seed: int) -> None:
    """A few seconds of training so the classifier teacher is accurate and its gates mean something."""
    rng = random.Random(seed + 1)
    labels = sorted(TOPICS)
    rows = [(sentence(rng, t), i) for _ in range(40) for i, t in enumerate(labels)]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(6):
        rng.shuffle(rows)
        for start in range(0, len(rows), 24):
            chunk = rows[start : start + 24]
            enc = tok([t for t, _ in chunk], padding=True, return_tensors="pt")
            loss = model(**enc, labels=torch.tensor([y for _, y in chunk])).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.eval()


def make_gpt2(path: Path, *, layers: int = 4, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    corpus = [sentence(rng, t) for t in TOPICS for _ in range(50)]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    cfg = GPT2Config(vocab_size=raw.get_vocab_size(), n_positions=64, n_embd=32, n_layer=layers, n_head=4,
                     initializer_range=0.2, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_two_tasks(root: Path, seed: int = 5, n_train: int = 96, n_eval: int = 60) -> dict[str, Path]:
    """Two tasks for the topic classifier (make_bert(classifier=True)) that degrade at different rates:
    `robust` is clear single-topic sentences with gold labels (the teacher is sure; a pruned student stays
    right), `fragile` is sentences mixing every topic's words, scored by agreement with the teacher, whose
    answers there sit near its decision boundaries and flip as soon as the student is perturbed."""
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    every = [w for ws in TOPICS.values() for w in ws] + FILLER

    def clear(n: int) -> list[dict]:
        return [{"text": sentence(rng, topics[i % 3]), "label": topics[i % 3]} for i in range(n)]

    def mixed(n: int) -> list[dict]:
        return [{"text": " ".join(rng.choice(every) for _ in range(8))} for _ in range(n)]

    root.mkdir(parents=True, exist_ok=True)
    sets = {"robust_train": clear(n_train), "robust_eval": clear(n_eval),
            "fragile_train": mixed(n_train), "fragile_eval": mixed(n_eval)}
    return {name: write_jsonl(root / f"{name}.jsonl", rows) for name, rows in sets.items()}
