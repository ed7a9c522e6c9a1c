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


def stdlib_sentences(limit: int | None = None) -> list[str]:
    """Unique prose sentences of 6 to 40 words, code-looking ones removed."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    out: list[str] = []
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in path.parts or path.name.startswith("test"):
            continue
        for doc in _docstrings(path):
            for para in doc.split("\n\n"):
                text = " ".join(para.split())
                for sent in _SENTENCE.split(text):
                    words = sent.split()
                    if not 6 <= len(words) <= 40 or _CODEISH.search(sent) or not sent[0].isupper():
                        continue
                    if sent not in seen:
                        seen.add(sent)
                        out.append(sent)
    return out[:limit] if limit else out


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
