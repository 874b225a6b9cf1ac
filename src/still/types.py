"""The shared vocabulary: messages, requests, completions, grades and prices.

Every stage passes these frozen pydantic objects around, so a completion written by
`capture` is the same object `grade`, `export` and `bench` read back from the store.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

HASH_ALGORITHM = "sha256-v1"
"""Tag stored with every request hash, so a future change of canonical form is detectable."""

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


class SamplingParams(BaseModel):
    """The parameters that change a model's output; all of them enter the request hash."""

    model_config = ConfigDict(frozen=True)

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 32
    seed: int | None = None
    stop: tuple[str, ...] = ()


class Request(BaseModel):
    """One chat request to one model.

    `labels`, when set, asks the provider to *score* each label's log-likelihood as the
    answer instead of generating free text: one forward pass, always a valid label.
    `json_schema`, when set, asks for a JSON answer valid against it: sent to endpoints as
    a json_schema response format, enforced by constrained decoding in local models.
    `unknown_params`, set only on imported traffic, names the sampling parameters the log
    did not record: `params` holds placeholders for them, which are stored and hashed as
    null, so such a request is a record of what was asked, never one to send again.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    messages: tuple[Message, ...]
    params: SamplingParams = SamplingParams()
    labels: tuple[str, ...] | None = None
    logprobs: bool = False
    top_logprobs: int = Field(
        0, ge=0, le=20, description="With logprobs: the k most likely tokens at each step."
    )
    json_schema: dict[str, Any] | None = None
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="Tags passed to backends that store completions themselves (OpenAI "
        "`store=True`). Not part of the request's identity: excluded from the hash.",
    )
    unknown_params: tuple[str, ...] = Field(
        (),
        description="Names of `params` fields the source of an imported request did not "
        "record; their values are placeholders, written (and hashed) as null.",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_unknown(cls, data: Any) -> Any:
        """Sort `unknown_params`, and read a stored null for one of them as a placeholder."""
        if not isinstance(data, dict) or not data.get("unknown_params"):
            return data
        raw = data["unknown_params"]
        if isinstance(raw, str) or not all(isinstance(n, str) for n in raw):
            return data  # pydantic refuses it with its own message
        unknown = tuple(sorted(set(raw)))
        data = {**data, "unknown_params": unknown}
        params = data.get("params")
        if isinstance(params, dict):
            data["params"] = {k: v for k, v in params.items() if not (k in unknown and v is None)}
        return data

    @model_validator(mode="after")
    def _check_unknown(self) -> Request:
        wrong = set(self.unknown_params) - set(SamplingParams.model_fields)
        if wrong:
            raise ValueError(
                f"unknown_params names {sorted(wrong)}, which are not sampling parameters "
                f"(those are {list(SamplingParams.model_fields)})"
            )
        return self

    @model_serializer(mode="wrap")
    def _write_unknown(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Unknown parameters as null; no `unknown_params` key when none is unknown, so an
        ordinary request is written (and hashed) exactly as before the field existed."""
        data: dict[str, Any] = handler(self)
        if not self.unknown_params:
            data.pop("unknown_params", None)
        elif isinstance(data.get("params"), dict):
            data["params"] = {
                k: None if k in self.unknown_params else v for k, v in data["params"].items()
            }
        return data

    def canonical(self) -> dict[str, Any]:
        """The request as a plain, key-sorted structure: what the hash is taken over.

        Fields added after the first stores (`json_schema`, `top_logprobs`,
        `unknown_params`) enter only when set, so requests without them keep the hashes they
        had before the fields existed (stores made then stay valid). Unknown parameters
        enter as null, never as their placeholders."""
        exclude = {"metadata"}
        if self.json_schema is None:
            exclude.add("json_schema")
        if not self.top_logprobs:
            exclude.add("top_logprobs")
        return self.model_dump(mode="json", exclude=exclude)

    def key(self) -> str:
        """Content address of the request: identical requests share one stored answer."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


class Usage(BaseModel):
    """Token counts of one completion."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Completion(BaseModel):
    """One request and its answer (or its error), with everything needed to audit it.

    A failed call is still a Completion: `error` is set and `text` is empty. It is stored
    and counted, never dropped.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: "cmpl-" + uuid.uuid4().hex[:24])
    request: Request
    request_hash: str = ""
    text: str = ""
    finish_reason: str | None = None
    usage: Usage = Usage()
    latency_s: float = 0.0
    # seconds until the first answer token: measured when streamed (endpoints with
    # STILL_STREAM=1; local models, whose prefill is the first token); None when unknown
    ttft_s: float | None = None
    cost: float | None = None
    error: str | None = None
    label_logprobs: dict[str, float] | None = None
    token_logprobs: tuple[float, ...] | None = None
    tokens: tuple[str, ...] | None = None  # the generated tokens, with logprobs
    top_logprobs: tuple[dict[str, float], ...] | None = None  # per token: top-k alternatives
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    cached: bool = False
    attempts: int = 1  # times the request was sent for this outcome; retries = attempts - 1

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def ok(self) -> bool:
        return self.error is None


class Grade(BaseModel):
    """A grader's verdict on one completion. A grader error is a failed grade, never a pass."""

    model_config = ConfigDict(frozen=True)

    grader: str
    example_id: str
    completion_id: str | None
    score: float
    passed: bool
    error: str | None = None


class Price(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, description="Dollars per million prompt tokens.")
    output: float = Field(ge=0, description="Dollars per million completion tokens.")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollars for one request."""
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6
