"""Import production traffic: completions answered elsewhere become stored completions.

A team that already calls a large model in production has its teacher's answers: OpenAI
or Azure stored completions (`store=True`), or request logs. Importing them lets `still`
grade, curate and train on that traffic without calling the teacher again:
`traffic_rows` reads what was imported back as (messages, answer, metadata) rows, the
shape a task's data or a training set needs, with no export file in between, and
`imported_completions` the completions themselves (a task's `data.source: store:` reads
them: the recorded answers stand as the teacher's). `still proxy` records live traffic the
same way: `exchange_completion` keeps one forwarded request and its answer (or error) as an
imported request log row is kept, tagged `source=proxy`, and both are read back alike.

Accepted files (the format is recognised per row):

- the JSON the stored-completions list endpoint returns (`GET /v1/chat/completions`:
  `{"object": "list", "data": [<chat.completion>, ...]}`), or its items one per line.
  That listing has no input messages: they come from the item itself (`input_messages`,
  `messages` or `request.messages`, when the user saved them with it) or from
  `messages_dir/<completion id>.json`, what `GET /v1/chat/completions/<id>/messages`
  returns (an id that is not a plain file name is refused: it would read outside the
  folder);
- chat JSONL (the fine-tuning format): `{"messages": [..., {"role": "assistant", ...}]}`,
  the last message being the answer;
- request logs: `{"request": {"model", "messages", ...}, "response": <chat.completion>}`.

What the log does not say is not made up. A sampling parameter a row does not name
(temperature, top_p, max_tokens, seed, stop) is stored as unknown (`Request.unknown_params`,
null in the stored request and its hash), not as `SamplingParams`' default. The model is
the one the request asked for when the row has it (a request log's or an item's
`request.model`, a chat row's `model`), else the response's; the response's model, often
a dated snapshot, is also kept as the `response_model` tag.

A malformed row is an error naming its file and line (or item), and so is a second row
with an id already read but another request or answer (the store keeps one completion per
id: the other would be lost in silence); nothing of that file is stored unless `skip_bad`
is set, in which case bad rows are reported and left out. Imports
are idempotent: a row keeps the id it had (or gets one from its content), and ids already
in the store are skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from still.errors import StillError
from still.prices import price_for
from still.store._store import MAX_METADATA_KEYS, Store, check_metadata
from still.types import Completion, Message, Request, SamplingParams, Usage

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ImportFormatError(StillError, ValueError):
    """A row of an imported file that is not a completion; the message names file and row."""


@dataclass
class ImportResult:
    """What reading one or more files gave: completions, and the rows left out and why."""

    completions: list[Completion] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # "file:line: reason"


def read_traffic(
    path: Path,
    *,
    messages_dir: Path | None = None,
    model: str | None = None,
    provider: str = "openai",
    metadata: Mapping[str, str] | None = None,
    skip_bad: bool = False,
) -> ImportResult:
    """Read one file of stored completions or chat logs into completions.

    Args:
        path: a .json listing or a .jsonl file (see the module docstring).
        messages_dir: folder of `<completion id>.json` message listings, for listings
            that do not carry their input messages.
        model: the model reference to store them under (default: `<provider>:<model>`,
            the model the row's request names, else the response's).
        provider: the scheme for model names that rows give (`openai` or `azure`).
        metadata: tags added to every imported completion (beside the row's own tags and
            `source=import`).
        skip_bad: leave malformed rows out (listed in `bad`) instead of failing.

    Raises:
        ImportFormatError: a malformed row (when not `skip_bad`), naming file and row.
        OSError: the file cannot be read.
    """
    out = ImportResult()
    first: dict[str, tuple[str, Completion]] = {}  # id -> where it was first read, and what
    for where, row in _rows(path):
        try:
            if isinstance(row, ImportFormatError):
                raise row
            c = _completion(row, where, messages_dir, model, provider, metadata or {})
            seen = first.setdefault(c.id, (where, c))
            if seen[1] is not c and (seen[1].request_hash, seen[1].text) != (
                c.request_hash,
                c.text,
            ):  # the store keeps one completion per id: the other would vanish in silence
                earlier = seen[0].removeprefix(str(path)).removeprefix(":").strip()
                earlier = earlier if earlier.startswith("item") else f"line {earlier}"
                raise ImportFormatError(
                    f"{where}: id {c.id!r} was already read ({earlier}) with another "
                    "request or answer; give each completion its own id"
                )
            out.completions.append(c)
        except ValueError as exc:  # ImportFormatError, or a field pydantic refused
            err = exc if isinstance(exc, ImportFormatError) else _refused(exc, where)
            if not skip_bad:
                raise err from None
            out.bad.append(str(err))
    return out


class TrafficRow(NamedTuple):
    """One imported completion as data: the prompt, the answer and its tags."""

    messages: tuple[Message, ...]
    """The request's messages (system and user turns, earlier assistant turns)."""
    answer: str
    """What the model answered: the assistant message to train on or grade."""
    metadata: dict[str, str]
    """The completion's tags: the log's own, `source=import`, `response_model`, and those
    given at import."""
    id: str
    """The stored completion's id, to say where a row came from."""


TRAFFIC_SOURCES = ("import", "proxy")
"""The `source` tags of production traffic in a store: `still store import` (`import`) and
`still proxy` (`proxy`), read alike as recorded answers."""


def traffic_rows(
    store: Store | str | Path,
    *,
    metadata: Mapping[str, str] | None = None,
    model: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[TrafficRow]:
    """Imported traffic, read back from a store as rows to grade, curate or train on.

    Only successful completions that `still store import` stored (tagged `source=import`)
    or `still proxy` recorded (`source=proxy`) are read, oldest first, so a pipeline can
    take production traffic as its data without an export file in between.

    Args:
        store: an open store, or the path of a store file (opened and closed here).
        metadata: only completions carrying every one of these tags, e.g.
            `{"app": "support-triage", "env": "prod"}`.
        model: only completions stored under this model reference (as imported: the
            requested model, e.g. `openai:gpt-4o-mini`).
        since: only completions created at or after this time (Unix seconds).
        until: only completions created before this time (Unix seconds).

    Returns:
        One row per matching completion.

    Raises:
        FileNotFoundError: `store` is a path with no file (a missing store is not read as
            an empty one).
    """
    found = imported_completions(store, metadata=metadata, model=model, since=since, until=until)
    return [TrafficRow(c.request.messages, c.text, dict(c.metadata), c.id) for c in found]


def imported_completions(
    store: Store | str | Path,
    *,
    metadata: Mapping[str, str] | None = None,
    model: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[Completion]:
    """The imported (and proxy-recorded) completions themselves, as `traffic_rows` selects
    them (same filters, oldest first), with their usage, cost and latency: what a task with
    a `store:` data source keeps as the teacher's recorded answers.

    Raises:
        FileNotFoundError: `store` is a path with no file.
    """
    if isinstance(store, Store):
        return _traffic(store, metadata, model, since, until)
    path = Path(store)
    if not path.is_file():
        raise FileNotFoundError(
            f"no store at {path}: import traffic into it first with "
            f"`still store import --db {path} <file>`"
        )
    with Store(path) as opened:
        return _traffic(opened, metadata, model, since, until)


def _traffic(
    store: Store,
    metadata: Mapping[str, str] | None,
    model: str | None,
    since: float | None,
    until: float | None,
) -> list[Completion]:
    found: list[Completion] = []
    for source in TRAFFIC_SOURCES:
        tags = {**(metadata or {}), "source": source}
        found += store.list(model=model, metadata=tags, errors=False, since=since, until=until)
    return sorted(found, key=lambda c: c.created_at)  # stable: store order within a time


def exchange_completion(
    request: Any,
    response: Any | None,
    *,
    model: str,
    completion_id: str,
    created_at: float,
    latency_s: float,
    ttft_s: float | None = None,
    error: str | None = None,
    tags: Mapping[str, str] | None = None,
    provider: str = "openai",
    source: str = "proxy",
) -> Completion:
    """One exchange recorded live (by `still proxy`) as a stored completion, kept as an
    imported request log row is: the request body's messages and sampling parameters (those
    it does not name are unknown, not defaults), the answer, usage, price, and the body's
    `metadata` as tags, plus `tags`, `source` and `response_model` when there is room.

    Args:
        request: the chat completion request body the client sent.
        response: the chat.completion the upstream answered (a stream assembled into one);
            None for a failed exchange.
        model: the model reference to store it under (e.g. `openai:gpt-4o-mini`).
        completion_id: its id in the store.
        created_at: when the request arrived (Unix seconds).
        latency_s: seconds from the request to the whole answer (or the failure).
        ttft_s: seconds to the first streamed content, when streamed.
        error: why the exchange failed (the upstream's status and message, a dropped
            connection); `response` is then ignored.
        tags: tags added to (and overriding) the body's metadata, e.g. a header's.
        provider: the scheme that prices the model the response names.
        source: the `source` tag.

    Returns:
        The completion, failed when `error` is set.

    Raises:
        ImportFormatError: the exchange is not one a completion can hold (a message that is
            not text, such as a tool call or an image; metadata that is not strings, or too
            many tags).
    """
    where = f"exchange {completion_id}"
    if not isinstance(request, dict):
        raise ImportFormatError(f"{where}: the request body is not a JSON object")
    own = request.get("metadata") or {}
    if not isinstance(own, dict):
        raise ImportFormatError(f"{where}: metadata must be an object of strings")
    given = {**{str(k): str(v) for k, v in own.items()}, **(tags or {})}
    body = {**request, "metadata": given}
    if error is None:
        room = len({**given, "source": source}) < MAX_METADATA_KEYS
        if not room and isinstance(response, dict):  # the caller's tags come first
            response = {k: v for k, v in response.items() if k != "model"}
        done = _from_chat_completion(response, body, where, model, provider, {}, source)
    else:
        params, unknown = _params(body)
        req = Request(
            model=model,
            messages=tuple(_messages(body.get("messages"), where)),
            params=params,
            unknown_params=unknown,
            metadata={},
        )
        done = _finish(req, "", None, Usage(), body, where, completion_id, {}, source=source)
        done = done.model_copy(update={"error": error})
    return done.model_copy(
        update={
            "id": completion_id,
            "created_at": created_at,
            "latency_s": latency_s,
            "ttft_s": ttft_s,
        }
    )


def _refused(exc: ValueError, where: str) -> ImportFormatError:
    """A validation error as one line naming the row (pydantic's own spans many)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return ImportFormatError(f"{where}: {loc}: {first.get('msg')}")
    return ImportFormatError(f"{where}: {exc}")


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, row) pairs: JSON listings by item, JSONL by line. A line that is not
    JSON comes as its ImportFormatError, so the caller can skip it and go on."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = data.count(b"\n", 0, exc.start) + 1
        raise ImportFormatError(
            f"{path}:{at}: not UTF-8 text (byte {data[exc.start]:#04x}); export the log "
            "as UTF-8 (JSON always is)"
        ) from None
    if path.suffix not in (".jsonl", ".ndjson"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if path.suffix == ".json":
                cut = exc.pos >= len(text.rstrip())
                raise ImportFormatError(
                    f"{path}:{exc.lineno}: not JSON ({exc.msg})"
                    + ("; the file ends mid-document: save or download it again" if cut else "")
                ) from None
            doc = None  # not one document: read it as JSON lines
        if isinstance(doc, dict) and doc.get("object") == "list" and "data" not in doc:
            raise ImportFormatError(
                f"{path}: a listing ('object': 'list') without 'data'; expected the list "
                f"endpoint's {{'object': 'list', 'data': [...]}} (keys here: {', '.join(doc)})"
            )
        if doc is not None:
            items = doc.get("data") if isinstance(doc, dict) and "data" in doc else doc
            if isinstance(items, dict):
                items = [items]
            if not isinstance(items, list):
                raise ImportFormatError(f"{path}: expected a list or {{'data': [...]}} listing")
            for i, item in enumerate(items):
                yield f"{path}: item {i}", item
            return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{n}", json.loads(line)
        except json.JSONDecodeError as exc:
            yield (
                f"{path}:{n}",
                ImportFormatError(
                    f"{path}:{n}: not JSON ({exc.msg}); fix that line, or leave bad rows out "
                    "with --skip-bad"
                ),
            )


def _completion(
    row: Any,
    where: str,
    messages_dir: Path | None,
    model: str | None,
    provider: str,
    extra_tags: Mapping[str, str],
) -> Completion:
    if not isinstance(row, dict):
        raise ImportFormatError(f"{where}: expected an object, got {type(row).__name__}")
    if "response" in row and "request" in row:  # a request log
        request, response = row["request"], row["response"]
        if isinstance(response, dict) and "body" in response:  # batch API output shape
            response = response["body"]
        return _from_chat_completion(response, request, where, model, provider, extra_tags)
    if "choices" in row:  # a stored completion
        request = _request_part(row, where, messages_dir)
        return _from_chat_completion(row, request, where, model, provider, extra_tags)
    if "request" in row:
        raise ImportFormatError(
            f"{where}: a request log row without its 'response' (a failed call?); add the "
            "response, or leave such rows out with --skip-bad"
        )
    if "messages" in row:  # chat JSONL
        msgs = _messages(row["messages"], where)
        if not msgs or msgs[-1].role != "assistant":
            raise ImportFormatError(f"{where}: the last message must be the assistant's answer")
        name = model or f"{provider}:{row.get('model', 'unknown')}"
        params, unknown = _params(row)
        req = Request(
            model=name,
            messages=tuple(msgs[:-1]),
            params=params,
            unknown_params=unknown,
            metadata={},
        )
        return _finish(
            req, msgs[-1].content, None, Usage(), row, where, _stable_id(row), extra_tags
        )
    raise ImportFormatError(
        f"{where}: not a stored completion (no 'choices'), chat row (no 'messages') or "
        "request log ('request' + 'response')"
    )


def _request_part(row: dict[str, Any], where: str, messages_dir: Path | None) -> dict[str, Any]:
    """The request side of a stored completion: its own fields plus its input messages.

    Its `model` is the one a saved `request` object names; an item without one gives
    only the response's model, which the caller falls back to."""
    saved = row.get("request")
    asked: dict[str, Any] = saved if isinstance(saved, dict) else {}
    part = {**{k: v for k, v in row.items() if k != "model"}, **asked}
    for key in ("input_messages", "messages"):
        if key in row:
            return {**part, "messages": row[key]}
    if "messages" in asked:
        return part
    cid = row.get("id")
    if messages_dir is not None and isinstance(cid, str):
        if not _plain_name(cid):
            raise ImportFormatError(
                f"{where}: completion id {cid!r} is not a plain file name; refusing to read "
                f"its messages outside {messages_dir}"
            )
        f = messages_dir / f"{cid}.json"
        if f.is_file():
            try:
                listing = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ImportFormatError(f"{f}:{exc.lineno}: not JSON ({exc.msg})") from None
            msgs = listing.get("data") if isinstance(listing, dict) else listing
            return {**part, "messages": msgs}
    raise ImportFormatError(
        f"{where}: stored completion {cid!r} has no input messages; the list endpoint does "
        "not return them: save GET /v1/chat/completions/<id>/messages as <id>.json in a "
        "folder and pass it with --messages"
    )


def _plain_name(name: str) -> bool:
    """Whether `name` is one file name: no folder part, not `.` or `..`, no NUL."""
    return (
        name not in ("", ".", "..")
        and not any(c in name for c in ("/", "\\", "\0"))
        and Path(name).name == name
    )


def _from_chat_completion(
    response: Any,
    request: Any,
    where: str,
    model: str | None,
    provider: str,
    extra_tags: Mapping[str, str],
    source: str = "import",
) -> Completion:
    if not isinstance(response, dict) or not isinstance(request, dict):
        raise ImportFormatError(f"{where}: request and response must be objects")
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ImportFormatError(f"{where}: the response has no choices")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        raise ImportFormatError(f"{where}: choices[0] has no message")
    text = _content(message.get("content"), where)
    served = response.get("model") if isinstance(response.get("model"), str) else None
    asked = request.get("model") if isinstance(request.get("model"), str) else None
    params, unknown = _params(request)
    req = Request(
        model=model or f"{provider}:{asked or served or 'unknown'}",
        messages=tuple(_messages(request.get("messages"), where)),
        params=params,
        unknown_params=unknown,
        metadata={},
    )
    u = response.get("usage") or {}
    if not isinstance(u, dict):
        raise ImportFormatError(f"{where}: usage must be an object, got {type(u).__name__}")
    usage = Usage(
        prompt_tokens=_tokens(u, "prompt_tokens", where),
        completion_tokens=_tokens(u, "completion_tokens", where),
    )
    cid = response.get("id") if isinstance(response.get("id"), str) else None
    return _finish(
        req,
        text,
        choices[0].get("finish_reason"),
        usage,
        {**request, **response},
        where,
        cid or _stable_id(response),
        {**({"response_model": served} if served else {}), **extra_tags},
        price_as=f"{provider}:{served}" if served else None,
        source=source,
    )


def _tokens(usage: Mapping[str, Any], key: str, where: str) -> int:
    """A token count of a response's `usage` (absent or null: 0)."""
    value = usage.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ImportFormatError(
            f"{where}: usage.{key} must be a whole number of tokens, got {value!r}"
        )
    return value


def _finish(
    req: Request,
    text: str,
    finish_reason: Any,
    usage: Usage,
    row: Mapping[str, Any],
    where: str,
    cid: str,
    extra_tags: Mapping[str, str],
    price_as: str | None = None,
    source: str = "import",
) -> Completion:
    """The completion of one row; `price_as` prices it when its own model has no price
    (a deployment name in `--model`, priced by the model the response names)."""
    tags = row.get("metadata") or {}
    if not isinstance(tags, dict):
        raise ImportFormatError(f"{where}: metadata must be an object of strings")
    tags = {**{str(k): str(v) for k, v in tags.items()}, "source": source, **extra_tags}
    try:
        check_metadata(tags)
    except ValueError as exc:
        raise ImportFormatError(f"{where}: {exc}") from None
    price = price_for(req.model) or (price_for(price_as) if price_as else None)
    created = row.get("created")
    return Completion(
        id=cid,
        request=req,
        request_hash=req.key(),
        text=text,
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        usage=usage,
        cost=price.cost(usage.prompt_tokens, usage.completion_tokens) if price else None,
        metadata=tags,
        **({"created_at": float(created)} if isinstance(created, int | float) else {}),
    )


def _messages(raw: Any, where: str) -> list[Message]:
    if not isinstance(raw, list):
        raise ImportFormatError(f"{where}: messages must be a list")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            raise ImportFormatError(
                f"{where}: message {i} has role {role!r}; still imports system, developer, "
                "user and assistant messages (tool calls are not supported yet)"
            )
        out.append(Message(role=_ROLES[m["role"]], content=_content(m.get("content"), where)))
    return out


def _content(content: Any, where: str) -> str:
    """Message content as text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") not in ("text", "input_text"):
                kind = p.get("type") if isinstance(p, dict) else type(p).__name__
                raise ImportFormatError(f"{where}: content part of type {kind!r} is not text")
            parts.append(str(p.get("text", "")))
        return "".join(parts)
    if content is None:
        raise ImportFormatError(f"{where}: a message has no content (a tool call?)")
    raise ImportFormatError(f"{where}: content must be text, got {type(content).__name__}")


def _params(req: Mapping[str, Any]) -> tuple[SamplingParams, tuple[str, ...]]:
    """The sampling parameters a logged request names, and the names of those it does not.

    A number given as null (the provider's default, whatever it was) is unknown too; a
    `seed` or `stop` given as null means none was set. The unknown ones keep
    `SamplingParams`' placeholders, which `Request` writes and hashes as null."""
    known: dict[str, Any] = {}
    for key in ("temperature", "top_p"):
        if req.get(key) is not None:
            known[key] = req[key]
    limit = req.get("max_completion_tokens")
    if limit is None:
        limit = req.get("max_tokens")
    if limit is not None:
        known["max_tokens"] = limit
    if "seed" in req:
        known["seed"] = req["seed"]
    if "stop" in req:
        stop = req["stop"] or ()
        known["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    unknown = tuple(k for k in SamplingParams.model_fields if k not in known)
    return SamplingParams(**known), unknown


def _stable_id(row: Any) -> str:
    """An id from the row's content, so importing the same file twice stores it once."""
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False).encode()
    return "cmpl-" + hashlib.sha256(blob).hexdigest()[:24]
