"""Token counts before a run, with each model's own tokenizer.

What a run will cost is decided by tokens, so they are counted the way the model counts
them, offline:

- `local:` and `vllm:` models (bundled, a Hugging Face folder or hub id): their own
  tokenizer and chat template, the exact prompt the provider will feed (`exact=True`).
- `openai:` and `azure:` models: OpenAI's BPE encodings from the `bpe-openai` package (a
  tiktoken-compatible tokenizer that ships its vocabularies, so nothing is downloaded),
  plus the chat format's per-message overhead from OpenAI's cookbook (3 tokens a message, 3
  to prime the reply). An Azure deployment name that is not a model name falls back to
  o200k_base.
- anything else (an `http://…#model` endpoint, `scripted:`): o200k_base, marked approximate.
  A task can name the right tokenizer per model (`tokenizers: {ref: local:… | encoding}`).

A counter never loads model weights, only a tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from still.errors import ModelError
from still.types import Message, Request

DEFAULT_ENCODING = "o200k_base"
TOKENS_PER_MESSAGE = 3  # <|start|>{role}\n ... <|end|> in OpenAI's chat format
REPLY_PRIMING = 3  # <|start|>assistant<|message|>
JSON_ANSWER_OVERHEAD = 6  # '{"answer":"' + '"}' around a label in a json_schema answer


class TokenCounter(Protocol):
    """Counts tokens the way one model does."""

    name: str
    exact: bool

    def text(self, text: str) -> int:
        """Tokens of plain text (an answer)."""
        ...

    def prompt(self, messages: Sequence[Message]) -> int:
        """Tokens of a chat prompt as the model receives it."""
        ...


@dataclass
class BPECounter:
    """An OpenAI BPE encoding (`bpe-openai`) with the chat format's overhead."""

    encoding: Any
    name: str
    exact: bool

    def text(self, text: str) -> int:
        return len(self.encoding.encode(text))

    def prompt(self, messages: Sequence[Message]) -> int:
        return (
            sum(TOKENS_PER_MESSAGE + self.text(m.content) + self.text(m.role) for m in messages)
            + REPLY_PRIMING
        )


@dataclass
class HFCounter:
    """A Hugging Face tokenizer with its chat template: the local provider's exact prompt."""

    tokenizer: Any
    name: str
    exact: bool = True

    def text(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt(self, messages: Sequence[Message]) -> int:
        from still.models import prompt_token_ids, render_prompt

        return len(prompt_token_ids(self.tokenizer, render_prompt(self.tokenizer, messages)))


@lru_cache(maxsize=16)
def _bpe(name: str) -> Any:
    return _bpe_module().get_encoding(name)


def _bpe_module() -> Any:
    try:
        import bpe_openai
    except ImportError:
        raise ImportError(
            "counting tokens of OpenAI-style models needs bpe-openai: pip install 'still[openai]'"
        ) from None
    return bpe_openai


@lru_cache(maxsize=8)
def _hf(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _bpe_counter(model_name: str, exact: bool) -> BPECounter:
    try:
        enc_name = _bpe_module().encoding_name_for_model(model_name)
    except Exception:  # noqa: BLE001 - an unknown model name: the current default encoding
        enc_name, exact = DEFAULT_ENCODING, False
    return BPECounter(_bpe(enc_name), enc_name, exact)


def counter_for(ref: str, overrides: Mapping[str, str] | None = None) -> TokenCounter:
    """The token counter of a model reference.

    Args:
        ref: a model reference (`local:…`, `openai:…`, `azure:…`, `http://…#model`).
        overrides: the task's `tokenizers:` map, model reference -> tokenizer spec (a
            `local:` model or folder whose tokenizer to use, or an OpenAI encoding name
            such as `cl100k_base`).

    Raises:
        ValueError: an override names neither a local model nor a known encoding.
    """
    spec = (overrides or {}).get(ref)
    if spec is not None:
        return _from_spec(spec, ref)
    scheme, _, rest = ref.partition(":")
    if scheme == "local":
        from still.models import local_path

        return HFCounter(_hf(str(local_path(ref))), Path(rest).name)
    if scheme == "vllm":  # the local provider's prompt, with the model's own tokenizer
        from still.models import vllm_model

        return HFCounter(_hf(vllm_model(ref)), Path(rest).name)
    if scheme in ("openai", "azure"):
        return _bpe_counter(rest, exact=True)
    return BPECounter(_bpe(DEFAULT_ENCODING), DEFAULT_ENCODING, exact=False)


def _from_spec(spec: str, ref: str) -> TokenCounter:
    bpe_openai = _bpe_module()
    if spec in bpe_openai.list_encoding_names():
        return BPECounter(_bpe(spec), spec, exact=True)
    from still.models import local_path

    try:
        path = local_path(spec)
    except ModelError as exc:
        names = ", ".join(bpe_openai.list_encoding_names())
        raise ModelError(
            f"tokenizers: {ref!r} -> {spec!r} is neither a local model ({exc}) nor an "
            f"OpenAI encoding ({names})"
        ) from None
    return HFCounter(_hf(str(path)), Path(spec.removeprefix("local:")).name)


@dataclass(frozen=True)
class TokenEstimate:
    """Tokens one request will use: its prompt exactly, its answer at most."""

    prompt: int
    output_max: int


def estimate(counter: TokenCounter, req: Request) -> TokenEstimate:
    """Count a request's prompt and bound its answer.

    A scored request (labels) answers with one label, wrapped in `{"answer": ...}` when sent
    to an endpoint: its bound is the longest label plus that wrapper. A generated one is
    bounded by `max_tokens`.
    """
    prompt = counter.prompt(req.messages)
    if req.labels:
        out = max(counter.text(label) for label in req.labels) + JSON_ANSWER_OVERHEAD
        return TokenEstimate(prompt, out)
    return TokenEstimate(prompt, req.params.max_tokens)
