"""Seeded sampling in a batch: every row draws from its own random stream.

A request that carries a seed must get the same answer whichever requests share its batch.
generate()'s own sampling draws every row from torch's one global generator, so a row's
sample would depend on its neighbours (and on how many there are): the local provider had
to decode seeded requests one at a time, 4-7 s each on a CPU.

Here a batch of seeded requests decodes greedily through `SeededSampler`, a logits
processor that warps each row as generate()'s sampling would (its own temperature, the
model's top_k, its own top_p) and adds Gumbel noise drawn from that row's own generator,
seeded by its request. The argmax of warped logits plus Gumbel noise is an exact sample
of their softmax (the Gumbel-max trick), so greedy decoding of the noisy scores samples
each row. A row draws one noise vector per step from its own generator: neither the other
rows, nor when they finish, change what it samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from still.types import SamplingParams

DEFAULT_TOP_K = 50
"""generate()'s top_k when sampling a model whose generation config sets none
(transformers' default): seeded rows are warped as unseeded sampling warps them."""


def is_greedy(params: SamplingParams) -> bool:
    """Whether a request decodes greedily: temperature 0, or top_p 0 (as OpenAI has it,
    its nucleus is the most likely token alone)."""
    return params.temperature <= 0 or params.top_p <= 0


def is_seeded_sampling(params: SamplingParams) -> bool:
    """Whether a request samples (not greedy) from its own seed."""
    return params.seed is not None and not is_greedy(params)


def model_top_k(generation_config: Any) -> int:
    """The top_k that generate() samples `generation_config`'s model with (0: none)."""
    top_k = getattr(generation_config, "top_k", None)
    return DEFAULT_TOP_K if top_k is None else int(top_k)


class SeededSampler:
    """A logits processor for greedy generate() that samples each row from its own seed.

    Each call warps the scores row by row (temperature, then top_k, then top_p, in
    generate()'s order and with its rules) and returns them plus Gumbel noise from each
    row's generator; the greedy argmax is then a sample of the warped softmax.

    Attributes:
        warped: The warped scores before noise, one (rows, vocab) tensor a step, when built
            with `record` (the distribution each token was sampled from, for logprobs).
    """

    def __init__(
        self, params: Sequence[SamplingParams], top_k: int, device: Any, record: bool = False
    ) -> None:
        import torch

        if not all(is_seeded_sampling(p) for p in params):
            raise ValueError("SeededSampler needs a seed, temperature > 0 and top_p > 0")
        self.temperature = torch.tensor([[p.temperature] for p in params], device=device)
        self.top_p = torch.tensor([[p.top_p] for p in params], device=device)
        self.top_k = top_k
        self.generators = [torch.Generator(device=device).manual_seed(p.seed or 0) for p in params]
        self.record = record
        self.warped: list[Any] = []

    def warp(self, scores: Any) -> Any:
        """Each row's scores under its temperature, the top_k and its top_p (others -inf)."""
        import torch

        scores = scores / self.temperature
        if self.top_k > 0:
            k = min(self.top_k, scores.shape[-1])
            kth = torch.topk(scores, k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if bool((self.top_p < 1).any()):
            # as transformers' TopPLogitsWarper: drop the least likely tokens whose total
            # probability stays within 1 - top_p, keeping at least the most likely one
            ordered, order = torch.sort(scores, descending=False, dim=-1)
            cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
            drop = (cumulative <= 1 - self.top_p) & (self.top_p < 1)
            drop[..., -1:] = False
            scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
        return scores

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        warped = self.warp(scores)
        if self.record:
            self.warped.append(warped)
        vocab = scores.shape[-1]
        uniform = torch.stack(
            [
                torch.rand(vocab, generator=g, device=scores.device, dtype=scores.dtype)
                for g in self.generators
            ]
        )
        # Gumbel(0, 1) noise; a uniform of exactly 0 gives -inf: that token is not drawn
        return warped - torch.log(-torch.log(uniform))
