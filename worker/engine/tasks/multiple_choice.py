"""Multiple choice for causal LMs, scored as lm-evaluation-harness scores it.

Each choice is the continuation " " + choice (the harness's default target delimiter) of the context; its
score is the sum of its tokens' log-likelihoods given the context. The harness's tokenisation is kept: the
context's trailing whitespace moves to the continuation, the pair is encoded whole, and the continuation's
tokens are what follows the context's own encoding. Over long inputs the left is cut (the continuation stays).

- acc: the choice with the highest log-likelihood is the label.
- acc_norm: the same after dividing each log-likelihood by its choice's length in characters.
- perplexity: over the right choices' tokens, beside the accuracies.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..bootstrap import mean_of, perplexity_of
from ..data import Dataset
from .base import TaskScore, ensure_pad_token

DELIMITER = " "


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation, context = context[-spaces:] + continuation, context[:-spaces]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    return ctx, whole[len(ctx):]


def requests(tokenizer, dataset: Dataset, max_length: int) -> list[tuple[int, int, list[int], int]]:
    """(row, choice, input tokens, continuation length) for every choice of every row."""
    out = []
    for i, row in enumerate(dataset.rows):
        for j, choice in enumerate(row["choices"]):
            ctx, cont = encode_pair(tokenizer, row["context"], DELIMITER + choice)
            cont = cont[-max_length:] or [tokenizer.eos_token_id]  # a choice cannot score on nothing
            tokens = (ctx + cont)[-(max_length + 1):]
            out.append((i, j, tokens, len(cont)))
    return out


@torch.no_grad()
def loglikelihoods(model: nn.Module, tokenizer, dataset: Dataset, batch_size: int, max_length: int,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """Per row and choice: the continuation's summed log-likelihood and token count (NaN/0 past a row's
    choices)."""
    ensure_pad_token(tokenizer)
    width = max(len(r["choices"]) for r in dataset.rows)
    ll = torch.full((len(dataset), width), float("nan"), dtype=torch.float64)
    tokens = torch.zeros((len(dataset), width), dtype=torch.long)
    reqs = requests(tokenizer, dataset, max_length)
    reqs.sort(key=lambda r: -len(r[2]))  # similar lengths together: less padding
    for start in range(0, len(reqs), batch_size):
        chunk = reqs[start:start + batch_size]
        longest = max(len(r[2]) for r in chunk) - 1
        ids = torch.full((len(chunk), longest), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (_, _, toks, _) in enumerate(chunk):
            ids[row, :len(toks) - 1] = torch.tensor(toks[:-1])
            mask[row, :len(toks) - 1] = 1
        logp = F.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        for row, (i, j, toks, n_cont) in enumerate(chunk):
            # the logits at position p predict token p + 1: the continuation's are the last n_cont positions
            end = len(toks) - 1
            target = torch.tensor(toks[end - n_cont + 1:end + 1], device=logp.device)
            ll[i, j] = float(logp[row, end - n_cont:end].gather(-1, target[:, None]).sum())
            tokens[i, j] = n_cont
    return {"loglikelihood": ll, "choice_tokens": tokens}


def choice_chars(dataset: Dataset) -> torch.Tensor:
    width = max(len(r["choices"]) for r in dataset.rows)
    out = torch.ones((len(dataset), width), dtype=torch.float64)
    for i, row in enumerate(dataset.rows):
        out[i, :len(row["choices"])] = torch.tensor([float(len(c)) for c in row["choices"]])
    return out


def best(scores: torch.Tensor) -> torch.Tensor:
    """The argmax over each row's choices (the NaN padding never wins)."""
    return torch.nan_to_num(scores, nan=-math.inf).argmax(-1)


def score_choices(outputs: dict, reference: dict, dataset: Dataset) -> TaskScore:
    ll = outputs["loglikelihood"]
    gold = torch.tensor([r["label"] for r in dataset.rows])
    picked, picked_norm = best(ll), best(ll / choice_chars(dataset))
    right = (picked == gold).numpy()
    right_norm = (picked_norm == gold).numpy()
    gold_nll = -ll.gather(1, gold[:, None])[:, 0].numpy()
    gold_tokens = outputs["choice_tokens"].gather(1, gold[:, None])[:, 0].numpy()
    agree = (picked == best(reference["loglikelihood"])).numpy()
    metrics = {
        "acc": float(right.mean()),
        "acc_norm": float(right_norm.mean()),
        "perplexity": math.exp(min(float(gold_nll.sum()) / max(int(gold_tokens.sum()), 1), 700.0)),
        "choice_agreement": float(agree.mean()),
    }
    samplers = {"acc": mean_of(right), "acc_norm": mean_of(right_norm),
                "perplexity": perplexity_of(gold_nll, gold_tokens), "choice_agreement": mean_of(agree)}
    return TaskScore(metrics, primary="acc", resamplers=samplers)
