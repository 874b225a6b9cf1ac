"""Import production traffic: completions answered elsewhere become stored completions.

A team that already calls a large model in production has its teacher's answers: OpenAI
or Azure stored completions (`store=True`), or request logs. Importing them lets `still`
grade, curate and train on that traffic without calling the teacher again.

Accepted files (the format is recognised per row):

- the JSON the stored-completions list endpoint returns (`GET /v1/chat/completions`:
  `{"object": "list", "data": [<chat.completion>, ...]}`), or its items one per line.
  That listing has no input messages: they come from the item itself (`input_messages`,
  `messages` or `request.messages`, when the user saved them with it) or from
  `messages_dir/<completion id>.json`, what `GET /v1/chat/completions/<id>/messages`
  returns;
- chat JSONL (the fine-tuning format): `{"messages": [..., {"role": "assistant", ...}]}`,
  the last message being the answer;
- request logs: `{"request": {"model", "messages", ...}, "response": <chat.completion>}`.

A malformed row is an error naming its file and line (or item); nothing of that file is
stored unless `skip_bad` is set, in which case bad rows are reported and left out. Imports
are idempotent: a row keeps the id it had (or gets one from its content), and ids already
in the store are skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from still.cost import price_for
from still.store._store import check_metadata
from still.types import Completion, Message, Request, SamplingParams, Usage

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ImportFormatError(ValueError):
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
            the model the row names).
        provider: the scheme for model names that rows give (`openai` or `azure`).
        metadata: tags added to every imported completion (beside the row's own tags and
            `source=import`).
        skip_bad: leave malformed rows out (listed in `bad`) instead of failing.

    Raises:
        ImportFormatError: a malformed row (when not `skip_bad`), naming file and row.
        OSError: the file cannot be read.
    """
    out = ImportResult()
    for where, row in _rows(path):
        try:
            if isinstance(row, ImportFormatError):
                raise row
            out.completions.append(
                _completion(row, where, messages_dir, model, provider, metadata or {})
            )
        except ValueError as exc:  # ImportFormatError, or a field pydantic refused
            err = exc if isinstance(exc, ImportFormatError) else _refused(exc, where)
            if not skip_bad:
                raise err from None
            out.bad.append(str(err))
    return out


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
    text = path.read_text(encoding="utf-8")
    if path.suffix not in (".jsonl", ".ndjson"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if path.suffix == ".json":
                raise ImportFormatError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
            doc = None  # not one document: read it as JSON lines
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
            yield f"{path}:{n}", ImportFormatError(f"{path}:{n}: not JSON ({exc.msg})")


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
    if "messages" in row:  # chat JSONL
        msgs = _messages(row["messages"], where)
        if not msgs or msgs[-1].role != "assistant":
            raise ImportFormatError(f"{where}: the last message must be the assistant's answer")
        name = model or f"{provider}:{row.get('model', 'unknown')}"
        req = Request(model=name, messages=tuple(msgs[:-1]), params=_params(row), metadata={})
        return _finish(
            req, msgs[-1].content, None, Usage(), row, where, _stable_id(row), extra_tags
        )
    raise ImportFormatError(
        f"{where}: not a stored completion (no 'choices'), chat row (no 'messages') or "
        "request log ('request' + 'response')"
    )


def _request_part(row: dict[str, Any], where: str, messages_dir: Path | None) -> dict[str, Any]:
    """The request side of a stored completion: its own fields plus its input messages."""
    for key in ("input_messages", "messages"):
        if key in row:
            return {**row, "messages": row[key]}
    if isinstance(row.get("request"), dict) and "messages" in row["request"]:
        return {**row, **row["request"]}
    cid = row.get("id")
    if messages_dir is not None and isinstance(cid, str):
        f = messages_dir / f"{cid}.json"
        if f.is_file():
            try:
                listing = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ImportFormatError(f"{f}:{exc.lineno}: not JSON ({exc.msg})") from None
            msgs = listing.get("data") if isinstance(listing, dict) else listing
            return {**row, "messages": msgs}
    raise ImportFormatError(
        f"{where}: stored completion {cid!r} has no input messages; the list endpoint does "
        "not return them: save GET /v1/chat/completions/<id>/messages as <id>.json in a "
        "folder and pass it with --messages"
    )


def _from_chat_completion(
    response: Any,
    request: Any,
    where: str,
    model: str | None,
    provider: str,
    extra_tags: Mapping[str, str],
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
    name = model or f"{provider}:{response.get('model') or request.get('model', 'unknown')}"
    req = Request(
        model=name,
        messages=tuple(_messages(request.get("messages"), where)),
        params=_params(request),
        metadata={},
    )
    u = response.get("usage") or {}
    usage = Usage(
        prompt_tokens=int(u.get("prompt_tokens") or 0),
        completion_tokens=int(u.get("completion_tokens") or 0),
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
        extra_tags,
    )


def _finish(
    req: Request,
    text: str,
    finish_reason: Any,
    usage: Usage,
    row: Mapping[str, Any],
    where: str,
    cid: str,
    extra_tags: Mapping[str, str],
) -> Completion:
    tags = row.get("metadata") or {}
    if not isinstance(tags, dict):
        raise ImportFormatError(f"{where}: metadata must be an object of strings")
    tags = {**{str(k): str(v) for k, v in tags.items()}, "source": "import", **extra_tags}
    try:
        check_metadata(tags)
    except ValueError as exc:
        raise ImportFormatError(f"{where}: {exc}") from None
    price = price_for(req.model)
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


def _params(req: Mapping[str, Any]) -> SamplingParams:
    """The sampling parameters a logged request names (defaults for the rest)."""
    known: dict[str, Any] = {}
    for key in ("temperature", "top_p", "seed"):
        if req.get(key) is not None:
            known[key] = req[key]
    limit = req.get("max_completion_tokens") or req.get("max_tokens")
    if limit is not None:
        known["max_tokens"] = limit
    stop = req.get("stop")
    if stop:
        known["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    return SamplingParams(**known)


def _stable_id(row: Any) -> str:
    """An id from the row's content, so importing the same file twice stores it once."""
    blob = json.dumps(row, sort_keys=True, ensure_ascii=False).encode()
    return "cmpl-" + hashlib.sha256(blob).hexdigest()[:24]
