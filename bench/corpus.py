"""English sentences that every machine has offline: the docstrings of Python's standard library.

Used to distil and evaluate sentence-embedding models in benchmarks and examples, where no dataset
can be downloaded. Deterministic for a given Python version: modules are read in sorted order.
"""

from __future__ import annotations

import ast
import json
import random
import re
import sys
import sysconfig
from pathlib import Path

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODEISH = re.compile(r"[=(){}\[\]<>_`*#|\\]|\.\.\.|>>>|::")


def _docstrings(path: Path):
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


def _prose(path: Path, seen: set[str]):
    """Unique prose sentences of 6 to 40 words in one module's docstrings, code-looking ones removed."""
    for doc in _docstrings(path):
        for para in doc.split("\n\n"):
            text = " ".join(para.split())
            for sent in _SENTENCE.split(text):
                words = sent.split()
                if not 6 <= len(words) <= 40 or _CODEISH.search(sent) or not sent[0].isupper():
                    continue
                if sent not in seen:
                    seen.add(sent)
                    yield sent


def _modules() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [p for p in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py"))
            if "test" not in p.parts and not p.name.startswith("test")]


def stdlib_sentences(limit: int | None = None) -> list[str]:
    """Unique prose sentences of 6 to 40 words, code-looking ones removed."""
    seen: set[str] = set()
    out = [sent for path in _modules() for sent in _prose(path, seen)]
    return out[:limit] if limit else out


def stdlib_sentences_by_module(min_sentences: int = 4) -> dict[str, list[str]]:
    """The same sentences grouped by the module they document (modules with at least `min_sentences`)."""
    seen: set[str] = set()
    out = {}
    for path in _modules():
        sents = list(_prose(path, seen))
        if len(sents) >= min_sentences:
            out[path.stem if path.parent.name == "lib" or path.parent.name.startswith("python") else
                f"{path.parent.name}.{path.stem}"] = sents
    return out


def split(sentences: list[str], n_eval: int, seed: int = 0) -> tuple[list[str], list[str]]:
    shuffled = sentences[:]
    random.Random(seed).shuffle(shuffled)
    return shuffled[n_eval:], shuffled[:n_eval]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


if __name__ == "__main__":
    sents = stdlib_sentences()
    print(f"{len(sents)} sentences from Python {sys.version.split()[0]}'s standard library", file=sys.stderr)
    for s in sents[:5]:
        print(s)
