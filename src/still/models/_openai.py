"""OpenAI-compatible endpoints through the official `openai` SDK.

References:

- `openai:<model>`: OpenAI (key `OPENAI_API_KEY`, base URL `OPENAI_BASE_URL` if set);
- `azure:<deployment>`: Azure OpenAI (`AZURE_OPENAI_ENDPOINT`, `AZURE_OPENAI_API_KEY`,
  `OPENAI_API_VERSION`);
- `http://host:port/v1#<model>` (or https): any compatible server (vLLM, llama.cpp,
  Ollama, `still serve`).

Keys go where they belong and nowhere else. `OPENAI_API_KEY` goes to OpenAI only and
`AZURE_OPENAI_API_KEY` to Azure only. A URL endpoint gets a key only from the variable the
task names for it (`api_key_env: {<reference or base URL>: VAR}`, handed over with
`use_key_variables`, since `get_model(ref)` sees no task); with none named it gets
`STILL_API_KEY` if it is on this machine (a loopback address: `still serve`), else no key
(the placeholder `EMPTY`, which keyless vLLM or llama.cpp servers accept). A key is never
sent over plain http to another machine: such a reference is refused before any request.

A batch is sent concurrently (bounded by `STILL_CONCURRENCY`, default 64) and paced under
`STILL_RPM` requests and `STILL_TPM` tokens per minute when those are set. 429, 408, 409,
5xx, timeouts (`STILL_TIMEOUT` seconds) and dropped connections are retried up to
`STILL_MAX_RETRIES` times (default 5) with exponential backoff and jitter, waiting what a
Retry-After header asks instead when there is one. Retries are our own (the SDK's are off)
so each completion records its `attempts`. A request that still fails comes back as a
failed Completion, and so does an answer with no choices or a body that is not a chat
completion (`MalformedResponse: ...`): the rest of the batch goes on. `complete_each` hands
each completion over as it arrives, so capture stores it then and a kill loses only the
requests in flight. Keys come from the environment only and are scrubbed from every error.
With `STILL_OPENAI_STORE=1` requests go out with `store=True` and their metadata tags (run,
task, role, split), so OpenAI keeps them as stored completions too. With `STILL_STREAM=1`
answers are streamed (usage included) and each completion records its time to first token.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from still.errors import ModelError
from still.models._provider import register_provider
from still.models._ratelimit import RateLimiter
from still.types import Completion, Request, Usage

ANSWER_PROPERTY = "answer"
FOREIGN_HEADERS = ("OpenAI-Organization", "OpenAI-Project")  # never sent to a URL endpoint


class OpenAIProvider:
    """Chat completions from an OpenAI-compatible endpoint."""

    def __init__(
        self, name: str, model: str, client_kwargs: dict[str, Any], azure: bool = False
    ) -> None:
        self.name = name
        self.model = model
        self.client_kwargs = client_kwargs
        self.azure = azure
        self.concurrency = int(os.environ.get("STILL_CONCURRENCY", "64"))
        # OpenAI stored completions: send store=True and each request's metadata tags
        self.store = os.environ.get("STILL_OPENAI_STORE", "").lower() in ("1", "true", "yes")
        # stream answers, to measure time to first token (same text, usage and logprobs)
        self.stream = os.environ.get("STILL_STREAM", "").lower() in ("1", "true", "yes")
        # capture hands over this many requests per call: enough to keep every concurrent
        # slot busy (each completion is stored as it arrives, see complete_each)
        self.batch_size = 2 * self.concurrency
        self.timeout_s = float(os.environ.get("STILL_TIMEOUT", "120"))
        self.max_retries = int(os.environ.get("STILL_MAX_RETRIES", "5"))
        self.backoff_s = float(os.environ.get("STILL_BACKOFF", "0.5"))
        self.retries = 0  # retries made by this provider, over all batches
        self.limiter = RateLimiter(
            rpm=float(os.environ["STILL_RPM"]) if os.environ.get("STILL_RPM") else None,
            tpm=float(os.environ["STILL_TPM"]) if os.environ.get("STILL_TPM") else None,
        )

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        """Send the batch concurrently; failures become failed completions."""
        return self.complete_each(requests, None)

    def complete_each(
        self,
        requests: Sequence[Request],
        on_results: Callable[[list[tuple[int, Completion]]], None] | None,
    ) -> list[Completion]:
        """Send the batch concurrently and hand the completions over as they arrive.

        Capture stores them in `on_results`, so a kill loses only the requests in flight,
        not the batch, and a slow retry holds back nobody's answer. The callback runs in one
        background thread, never on the event loop: a commit delays no response, and what
        arrives while it runs comes in its next call (one commit for many under load).

        Args:
            requests: the batch.
            on_results: called with `[(index in requests, completion), ...]` as requests
                are answered or fail for good. If it raises, no more requests are sent and
                the error is raised here.

        Returns:
            Every completion, in the order of `requests`.
        """
        if on_results is None:
            return asyncio.run(self._all(list(requests), None))
        handover = _Handover(on_results)
        try:
            return asyncio.run(self._all(list(requests), handover.put))
        finally:
            handover.close()

    async def _all(
        self, requests: list[Request], on_result: Callable[[int, Completion], None] | None
    ) -> list[Completion]:
        import openai

        cls = openai.AsyncAzureOpenAI if self.azure else openai.AsyncOpenAI
        kwargs = dict(self.client_kwargs)
        if self.name.startswith(("http://", "https://")):
            # the SDK would add OPENAI_ORG_ID and OPENAI_PROJECT_ID: OpenAI's, like its key
            kwargs["default_headers"] = {h: openai.Omit() for h in FOREIGN_HEADERS}
        client = cls(**kwargs, timeout=self.timeout_s, max_retries=0)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(i: int, req: Request) -> Completion:
            c = await self._one(client, gate, req)
            if on_result is not None:
                on_result(i, c)
            return c

        try:
            return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))
        finally:
            await client.close()

    async def _one(self, client: Any, gate: asyncio.Semaphore, req: Request) -> Completion:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [m.model_dump() for m in req.messages],
            "temperature": req.params.temperature,
            "top_p": req.params.top_p,
            "max_tokens": req.params.max_tokens,
        }
        if req.params.seed is not None:
            kwargs["seed"] = req.params.seed
        if req.params.stop:
            kwargs["stop"] = list(req.params.stop)
        if req.logprobs:
            kwargs["logprobs"] = True
            if req.top_logprobs:
                kwargs["top_logprobs"] = req.top_logprobs
        if req.labels:
            kwargs["response_format"] = label_schema(req.labels)
        elif req.json_schema is not None:
            kwargs["response_format"] = schema_format(req.json_schema)
        if self.store:
            kwargs["store"] = True
            if req.metadata:
                kwargs["metadata"] = dict(req.metadata)
        if self.stream:
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
        start = time.perf_counter()
        attempt = 0
        ttft: float | None = None
        async with gate:
            while True:
                attempt += 1
                await self.limiter.acquire(estimate_tokens(req))
                try:
                    sent = time.perf_counter()
                    if self.stream:
                        resp, ttft = await _collect_stream(
                            await client.chat.completions.create(**kwargs), sent
                        )
                    else:
                        resp = await client.chat.completions.create(**kwargs)
                    break
                except Exception as exc:  # noqa: BLE001 - retried, else stored as failed
                    if attempt > self.max_retries or not retryable(exc):
                        # a body that is not JSON is a malformed answer like any other
                        bad = "MalformedResponse: " if isinstance(exc, json.JSONDecodeError) else ""
                        return Completion(
                            request=req,
                            request_hash=req.key(),
                            attempts=attempt,
                            error=self._scrub(f"{bad}{type(exc).__name__}: {exc}"),
                            latency_s=time.perf_counter() - start,
                        )
                    self.retries += 1
                    await asyncio.sleep(retry_delay(exc, attempt, self.backoff_s))
        latency = time.perf_counter() - start
        try:
            return _parse(req, resp, attempt, latency, ttft)
        except Exception as exc:  # noqa: BLE001 - a malformed answer fails its request only
            detail = (
                str(exc) if isinstance(exc, MalformedResponse) else f"{type(exc).__name__}: {exc}"
            )
            return Completion(
                request=req,
                request_hash=req.key(),
                attempts=attempt,
                error=self._scrub(f"MalformedResponse: {detail}"),
                latency_s=latency,
            )

    def _scrub(self, text: str) -> str:
        """Remove any secret this provider holds from a message before it is stored."""
        for key in ("api_key", "azure_ad_token"):
            secret = self.client_kwargs.get(key)
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text


class _Handover:
    """Hands completions to a callback from one background thread, in arrival order:
    everything that arrived while the callback ran goes in its next call."""

    def __init__(self, callback: Callable[[list[tuple[int, Completion]]], None]) -> None:
        self.callback = callback
        self.queue: queue.SimpleQueue[tuple[int, Completion] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="still-handover", daemon=True)
        self.thread.start()

    def put(self, index: int, completion: Completion) -> None:
        """Queue one completion; raises the callback's error once it has failed."""
        if self.error is not None:
            raise self.error
        self.queue.put((index, completion))

    def close(self) -> None:
        """Wait until everything queued is handed over; raise the callback's error if any."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            items = [self.queue.get()]
            while not self.queue.empty():
                items.append(self.queue.get())
            done = [x for x in items if x is not None]
            if done and self.error is None:
                try:
                    self.callback(done)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                    self.error = exc
            if len(done) < len(items):  # None: closed
                return


class MalformedResponse(ValueError):
    """A 200 answer without what a chat completion must hold."""


def _parse(
    req: Request, resp: Any, attempts: int, latency: float, ttft: float | None
) -> Completion:
    """The completion a chat completion response gives a request.

    Raises:
        MalformedResponse: (or any error reading it) the response holds no answer.
    """
    if not getattr(resp, "choices", None):
        raise MalformedResponse("the response holds no choices")
    choice = resp.choices[0]
    if getattr(choice, "message", None) is None:
        raise MalformedResponse("the response's choice holds no message")
    text = choice.message.content or ""
    if req.labels:
        text = unwrap_answer(text)
    lps = tokens = top = None
    if choice.logprobs is not None and choice.logprobs.content:
        content = choice.logprobs.content
        lps = tuple(float(t.logprob) for t in content)
        tokens = tuple(str(t.token) for t in content)
        if req.top_logprobs:
            top = tuple(
                {str(a.token): float(a.logprob) for a in (t.top_logprobs or [])} for t in content
            )
    label_lps = None
    if req.labels and top and tokens:
        label_lps = label_scores_from_top(tokens, top, text, req.labels)
    usage = resp.usage
    return Completion(
        request=req,
        request_hash=req.key(),
        text=text,
        finish_reason=choice.finish_reason,
        usage=Usage(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        ),
        latency_s=latency,
        ttft_s=ttft,
        token_logprobs=lps,
        tokens=tokens,
        top_logprobs=top,
        label_logprobs=label_lps,
        attempts=attempts,
    )


async def _collect_stream(stream: Any, sent: float) -> tuple[Any, float | None]:
    """Read a streamed chat completion to its end and rebuild the response object the
    non-streamed call returns (content, finish reason, logprobs, usage), with the seconds
    from sending to the first content token."""
    from openai.types.chat import ChatCompletion

    text: list[str] = []
    logprobs: list[Any] = []
    finish: str | None = None
    usage = None
    ttft: float | None = None
    created, model, rid = 0, "", ""
    async for chunk in stream:
        created, model, rid = chunk.created, chunk.model, chunk.id
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            if choice.delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - sent
                text.append(choice.delta.content)
            if choice.logprobs is not None and choice.logprobs.content:
                logprobs += [t.model_dump() for t in choice.logprobs.content]
            finish = choice.finish_reason or finish
    resp = ChatCompletion.model_validate(
        {
            "id": rid or "stream",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "usage": usage,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish or "stop",
                    "message": {"role": "assistant", "content": "".join(text)},
                    "logprobs": {"content": logprobs} if logprobs else None,
                }
            ],
        }
    )
    return resp, ttft


def estimate_tokens(req: Request) -> float:
    """Tokens a request may use, for rate limits: prompt characters / 4 + max_tokens."""
    return sum(len(m.content) for m in req.messages) / 4 + req.params.max_tokens


RETRY_STATUS = {408, 409, 429}
MAX_RETRY_AFTER_S = 60.0


def retryable(exc: Exception) -> bool:
    """Whether a failed call may succeed if sent again: rate limits, server errors,
    timeouts and dropped connections; never a 400/401/403/404."""
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRY_STATUS or exc.status_code >= 500
    return False


def retry_delay(exc: Exception, attempt: int, base_s: float) -> float:
    """Seconds to wait before attempt `attempt + 1`: the server's Retry-After (or
    retry-after-ms) when given, else exponential backoff with full jitter.

    >>> 0 <= retry_delay(RuntimeError(), 3, 0.5) <= 2.0
    True
    """
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    asked = _retry_after(headers)
    if asked is not None and 0 <= asked <= MAX_RETRY_AFTER_S:
        return asked
    return random.uniform(0, min(30.0, base_s * 2 ** (attempt - 1)))


def _retry_after(headers: Any) -> float | None:
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return float(value)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def label_schema(labels: Sequence[str]) -> dict[str, Any]:
    """A strict json_schema response format asking for one of `labels`."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {ANSWER_PROPERTY: {"type": "string", "enum": list(labels)}},
                "required": [ANSWER_PROPERTY],
                "additionalProperties": False,
            },
        },
    }


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    """A json_schema response format for an output schema; `strict` (OpenAI's guaranteed
    Structured Outputs) when the schema meets strict mode's rules, else best effort (strict
    mode refuses other schemas with a 400, which would fail every request).

    >>> schema_format({"type": "object", "properties": {"a": {"type": "integer"}},
    ...     "required": ["a"], "additionalProperties": False})["json_schema"]["strict"]
    True
    >>> schema_format({"type": "object", "properties": {"a": {"type": "integer"}}})[
    ...     "json_schema"]["strict"]
    False
    """
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "strict": _strict_ok(schema), "schema": schema},
    }


def _strict_ok(node: Any) -> bool:
    """Whether every object in a schema closes its properties and requires all of them
    (OpenAI strict mode's rules), looking through nested schemas."""
    if isinstance(node, list):
        return all(_strict_ok(x) for x in node)
    if not isinstance(node, dict):
        return True
    if node.get("type") == "object":
        props = node.get("properties") or {}
        if node.get("additionalProperties") is not False or set(node.get("required", [])) != set(
            props
        ):
            return False
    return all(_strict_ok(v) for k, v in node.items() if k not in ("enum", "const", "required"))


def label_scores_from_top(
    tokens: Sequence[str],
    top: Sequence[dict[str, float]],
    answer: str,
    labels: Sequence[str],
) -> dict[str, float] | None:
    """The teacher's distribution over the labels, read off an endpoint's top_logprobs.

    An endpoint answers a label request with `{"answer": "<label>"}` and, with logprobs,
    its k most likely tokens at each step. At the token where the label begins, each
    alternative that starts a label (or spells it whole) gives that label its logprob
    (summed over alternatives, in probability); a label no alternative starts gets the
    least logprob seen minus 1 (less likely than anything in the top k). Labels that share
    a first token share its mass: an approximation, exact when first tokens differ.

    Returns None when the label's first token cannot be found.
    """

    def clean(tok: str) -> str:
        return tok.strip(' "{}:')

    start = next((i for i, t in enumerate(tokens) if ":" in t), -1) + 1
    for i in range(start, len(tokens)):
        c = clean(tokens[i])
        if c and answer.startswith(c):
            break
    else:
        return None
    alternatives = top[i] if i < len(top) else {}
    if not alternatives:
        return None
    mass: dict[str, list[float]] = {}
    for tok, lp in alternatives.items():
        c = clean(tok)
        if not c:
            continue
        for lab in labels:
            if lab.startswith(c) or c.startswith(lab):
                mass.setdefault(lab, []).append(lp)
    if answer in labels and answer not in mass:
        return None  # the chosen label is not among its own first token's alternatives
    floor = min(alternatives.values()) - 1.0
    return {lab: _logsumexp(mass[lab]) if lab in mass else floor for lab in labels}


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def unwrap_answer(text: str) -> str:
    """The label inside `{"answer": ...}`; the raw text if it is not that shape (the parser
    then decides whether it names a label, and counts it unparseable if not).

    >>> unwrap_answer('{"answer": "spam"}'), unwrap_answer("spam")
    ('spam', 'spam')
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(obj, dict) and isinstance(obj.get(ANSWER_PROPERTY), str):
        return str(obj[ANSWER_PROPERTY])
    return text


def _env_key(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


# The providers' own keys: never sent to a URL endpoint, whatever a task names.
RESERVED_KEY_VARIABLES = frozenset({"OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"})
LOOPBACK_KEY_VARIABLE = "STILL_API_KEY"
NO_KEY = "EMPTY"  # what keyless OpenAI-compatible servers expect; not a secret
_KEY_VARIABLES: dict[str, str] = {}


def use_key_variables(names: Mapping[str, str]) -> None:
    """Name the variable holding each URL endpoint's key (a task's `api_key_env`).

    Models loaded afterwards with `get_model(ref)` read their key from the variable named
    for their reference (`http://host/v1#model`) or, failing that, for its base URL
    (`http://host/v1`). The names replace any given before, so one task's keys never reach
    another task's models.

    Args:
        names: model reference or base URL -> environment variable name.

    Raises:
        ModelError: a name is OPENAI_API_KEY or AZURE_OPENAI_API_KEY, which go to their
            own providers only.
    """
    for where, var in names.items():
        if var in RESERVED_KEY_VARIABLES:
            raise ModelError(
                f"api_key_env: {where} may not use {var}, which goes to its own provider "
                "only; name a variable of its own for this endpoint"
            )
    _KEY_VARIABLES.clear()
    _KEY_VARIABLES.update({_endpoint_id(k): v for k, v in names.items()})


def key_variable_for(ref: str) -> str | None:
    """The variable named for a URL reference, by the reference itself or its base URL."""
    base = ref.partition("#")[0]
    return _KEY_VARIABLES.get(_endpoint_id(ref)) or _KEY_VARIABLES.get(_endpoint_id(base))


def _endpoint_id(ref: str) -> str:
    """A reference or base URL with no trailing slash before the model, for matching."""
    base, sep, model = ref.partition("#")
    return base.rstrip("/") + sep + model


def is_loopback(url: str) -> bool:
    """Whether a URL's host is this machine (localhost, 127.0.0.0/8, ::1).

    >>> is_loopback("http://127.0.0.2:8000/v1"), is_loopback("http://[::1]/v1")
    (True, True)
    >>> is_loopback("http://10.0.0.5:8000/v1"), is_loopback("http://localhost.evil.com/v1")
    (False, False)
    """
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_transport(ref: str, base_url: str, var: str) -> None:
    """Refuse to send a key over plain http to another machine."""
    if urlsplit(base_url).scheme == "http" and not is_loopback(base_url):
        host = urlsplit(base_url).hostname
        raise ModelError(
            f"{ref}: refusing to send {var} over plain http to {host}; use https:// or a "
            "loopback address"
        )


@register_provider("openai", "OpenAI: openai:<model> (OPENAI_API_KEY)")
def openai_factory(ref: str) -> OpenAIProvider:
    model = ref.partition(":")[2]
    kwargs: dict[str, Any] = {"api_key": _env_key("OPENAI_API_KEY")}
    if not kwargs["api_key"]:
        raise ModelError(f"{ref}: set OPENAI_API_KEY (in the environment or a .env file)")
    if os.environ.get("OPENAI_BASE_URL"):
        kwargs["base_url"] = os.environ["OPENAI_BASE_URL"]
        _check_transport(ref, kwargs["base_url"], "OPENAI_API_KEY")
    return OpenAIProvider(ref, model, kwargs)


@register_provider("azure", "Azure OpenAI: azure:<deployment> (AZURE_OPENAI_* variables)")
def azure_factory(ref: str) -> OpenAIProvider:
    deployment = ref.partition(":")[2]
    endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT")
    key = _env_key("AZURE_OPENAI_API_KEY")
    if not endpoint or not key:
        raise ModelError(f"{ref}: set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY")
    _check_transport(ref, endpoint, "AZURE_OPENAI_API_KEY")
    kwargs = {
        "api_key": key,
        "azure_endpoint": endpoint,
        "api_version": os.environ.get("OPENAI_API_VERSION", "2024-10-21"),
    }
    return OpenAIProvider(ref, deployment, kwargs, azure=True)


def _url_factory(ref: str) -> OpenAIProvider:
    base, sep, model = ref.partition("#")
    if not sep or not model:
        raise ModelError(f"{ref}: name the model after '#', e.g. http://127.0.0.1:8000/v1#my-model")
    var = key_variable_for(ref)
    if var is not None:
        if var in RESERVED_KEY_VARIABLES:  # use_key_variables refuses these; never send one
            raise ModelError(f"{ref}: {var} goes to its own provider only")
        _check_transport(ref, base, var)
        key = os.environ.get(var)
        if not key:
            raise ModelError(f"{ref}: set {var}, the variable the task's api_key_env names")
    elif is_loopback(base):
        key = os.environ.get(LOOPBACK_KEY_VARIABLE) or NO_KEY
    else:
        key = NO_KEY
    return OpenAIProvider(ref, model, {"api_key": key, "base_url": base})


for _scheme, _help in (
    ("http", "any OpenAI-compatible server: http://host:port/v1#<model>"),
    ("https", "the same over TLS: https://host/v1#<model>"),
):
    register_provider(_scheme, _help + " (key: the task's api_key_env)")(_url_factory)


@dataclass(frozen=True)
class EndpointAccess:
    """Where an endpoint reference's chat requests go and the credentials they carry, for
    code that sends request bodies as they are (`still proxy`). The key rules are this
    module's: `OPENAI_API_KEY` to OpenAI only, `AZURE_OPENAI_API_KEY` to Azure only, a URL
    endpoint's key from the variable named for it, never a key over plain http to another
    machine. `headers` and `secret` stay out of `repr`, so a log line never shows them."""

    name: str
    """The reference as given, e.g. `openai:` or `http://127.0.0.1:8000/v1`."""
    base_url: str
    """The API root, without a trailing slash (`https://api.openai.com/v1`)."""
    chat_url: str
    """Where chat completions are posted (Azure's carries its api-version)."""
    model: str | None
    """The model (or Azure deployment) the reference names; None: the client's."""
    provider: str
    """The scheme: openai, azure, http or https."""
    headers: Mapping[str, str] = field(repr=False, default_factory=dict)
    """Authentication headers (`Authorization: Bearer ...` or Azure's `api-key`)."""
    secret: str | None = field(repr=False, default=None)
    """The key itself, to scrub from anything that leaves the process."""

    def model_ref(self, asked: str | None) -> str:
        """The still reference of a model asked through this endpoint: `openai:<model>`,
        `azure:<deployment>`, `<base URL>#<model>` (what `get_model` would call it)."""
        model = self.model or asked or "unknown"
        if self.provider in ("openai", "azure"):
            return f"{self.provider}:{model}"
        return f"{self.base_url}#{model}"


def endpoint_access(ref: str, key_variable: str | None = None) -> EndpointAccess:
    """The URL and credentials of an `openai:[model]`, `azure:<deployment>` or
    `http(s)://host/v1[#model]` reference.

    Args:
        ref: the reference; `openai:` alone and a URL without `#model` leave the model to
            each request.
        key_variable: for a URL, the environment variable holding its key (as a task's
            `api_key_env` names one); without it a loopback URL gets `STILL_API_KEY` when
            set, any other none.

    Raises:
        ModelError: a key variable that is not set, or reserved for another provider; a key
            over plain http to another machine; a scheme that is not an endpoint.
    """
    scheme, _, rest = ref.partition(":")
    if scheme == "openai":
        key = _env_key("OPENAI_API_KEY")
        if not key:
            raise ModelError(f"{ref}: set OPENAI_API_KEY (in the environment or a .env file)")
        base = (os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        _check_transport(ref, base, "OPENAI_API_KEY")
        return EndpointAccess(
            ref, base, base + "/chat/completions", rest or None, "openai",
            {"Authorization": f"Bearer {key}"}, key,
        )  # fmt: skip
    if scheme == "azure":
        endpoint = (os.environ.get("AZURE_OPENAI_ENDPOINT") or "").rstrip("/")
        key = _env_key("AZURE_OPENAI_API_KEY")
        if not endpoint or not key or not rest:
            raise ModelError(
                f"{ref}: name the deployment (azure:<deployment>) and set "
                "AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY"
            )
        _check_transport(ref, endpoint, "AZURE_OPENAI_API_KEY")
        version = os.environ.get("OPENAI_API_VERSION", "2024-10-21")
        base = f"{endpoint}/openai/deployments/{rest}"
        chat = f"{base}/chat/completions?api-version={version}"
        return EndpointAccess(ref, base, chat, rest, "azure", {"api-key": key}, key)
    if scheme not in ("http", "https"):
        raise ModelError(f"{ref}: not an endpoint; use openai:, azure:<deployment> or a URL")
    base, _, model = ref.partition("#")
    base = base.rstrip("/")
    var = key_variable or key_variable_for(ref)
    if var is not None:
        if var in RESERVED_KEY_VARIABLES:
            raise ModelError(
                f"{ref}: {var} goes to its own provider only; name a variable of its own "
                "for this endpoint"
            )
        _check_transport(ref, base, var)
        key = os.environ.get(var)
        if not key:
            raise ModelError(f"{ref}: set {var}, the variable named for this endpoint's key")
    else:
        key = os.environ.get(LOOPBACK_KEY_VARIABLE) if is_loopback(base) else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return EndpointAccess(
        ref, base, base + "/chat/completions", model or None, scheme, headers, key or None
    )
