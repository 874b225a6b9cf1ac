"""What the distillation recipes share besides the setup in _common: the divergence
between two distributions, the logits a causal LM puts on a given answer's tokens, and
the error for a teacher whose vocabulary differs from the student's.

Kept apart so that each recipe (kd.py, kd_tokens.py, kd_topk.py, dpo.py) imports these
from one place rather than from another recipe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from still.errors import TrainError
from still.train._packing import collate


class TokenizerMismatch(TrainError):
    """Teacher and student tokenize differently: token-level KD is impossible."""


def divergence(
    student: Any, teacher: Any, kind: str, temperature: float = 1.0, beta: float = 0.5
) -> Any:
    """Mean divergence between distributions given as log-scores (rows, classes), both
    softened by `temperature`, times temperature² (so gradients keep their size).

    kind: `forward_kl` KL(t||s), `reverse_kl` KL(s||t), or `jsd`: beta KL(t||m) +
    (1 - beta) KL(s||m) with m = beta t + (1 - beta) s.
    """
    import torch

    log_s = torch.log_softmax(student / temperature, dim=-1)
    log_t = torch.log_softmax(teacher / temperature, dim=-1)
    if kind == "forward_kl":
        d = (log_t.exp() * (log_t - log_s)).sum(-1)
    elif kind == "reverse_kl":
        d = (log_s.exp() * (log_s - log_t)).sum(-1)
    elif kind == "jsd":
        if beta <= 0 or beta >= 1:
            raise ValueError("jsd needs 0 < beta < 1")
        log_m = torch.logsumexp(
            torch.stack([log_t + math.log(beta), log_s + math.log(1 - beta)]), dim=0
        )
        d = beta * (log_t.exp() * (log_t - log_m)).sum(-1) + (1 - beta) * (
            log_s.exp() * (log_s - log_m)
        ).sum(-1)
    else:
        raise ValueError(f"unknown divergence {kind!r}: forward_kl, reverse_kl or jsd")
    return d.mean() * temperature**2


def answer_logits(
    model: Any,
    prompts: Sequence[list[int]],
    answers: Sequence[list[int]],
    pad: int,
    device: str,
    vocab: int,
    width: int | None = None,
) -> tuple[Any, Any]:
    """Logits predicting each answer token (rows flattened: (answer tokens, vocab)) and the
    target ids, from one forward pass over each prompt followed by its answer: right-padded,
    or packed into rows of `width` tokens (still.train._packing; the same logits up to
    float rounding). Only the first `vocab` logits are kept (models pad their output layer
    past the tokenizer's size)."""
    import torch

    seqs = [p + a for p, a in zip(prompts, answers, strict=True)]
    batch = collate(seqs, pad, device, width)
    logits = model(**batch.inputs).logits[..., :vocab].float()
    rows, cols, targets = [], [], []
    for (row, start), p, a in zip(batch.places, prompts, answers, strict=True):
        for j, tok in enumerate(a):
            rows.append(row)
            cols.append(start + len(p) + j - 1)  # the logits at position i predict token i + 1
            targets.append(tok)
    return logits[rows, cols], torch.tensor(targets, device=device)


def answer_logprobs(
    model: Any,
    prompts: Sequence[list[int]],
    answers: Sequence[list[int]],
    pad: int,
    device: str,
    vocab: int,
) -> Any:
    """Each answer's summed log-probability after its prompt, shape (rows,), with
    gradients when the model has them (DPO compares these)."""
    import torch

    logits, targets = answer_logits(model, prompts, answers, pad, device, vocab)
    per_token = torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)
    owner = torch.tensor([b for b, a in enumerate(answers) for _ in a], device=device)
    return torch.zeros(len(answers), device=device).index_add(0, owner, per_token)
