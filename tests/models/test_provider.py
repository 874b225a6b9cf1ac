"""isolate_failures: the one rule every built-in provider answers a batch by (one bad
request is one failed completion, its neighbours answered)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from still.models import isolate_failures
from still.types import Completion, Message, Request


def _req(text: str) -> Request:
    return Request(model="scripted:echo", messages=(Message(role="user", content=text),))


def _echo_unless_bad(calls: list[int]) -> Callable[[list[Request]], list[Completion]]:
    def answer(batch: list[Request]) -> list[Completion]:
        calls.append(len(batch))
        if any(r.messages[0].content == "bad" for r in batch):
            raise ValueError("a bad\nrequest " + "x" * 1000)
        return [
            Completion(request=r, request_hash=r.key(), text=r.messages[0].content) for r in batch
        ]

    return answer


def test_a_batch_that_succeeds_is_answered_in_one_call() -> None:
    calls: list[int] = []
    out = isolate_failures([_req("a"), _req("b")], _echo_unless_bad(calls))
    assert [c.text for c in out] == ["a", "b"] and calls == [2]


def test_one_bad_request_fails_alone_on_one_line() -> None:
    calls: list[int] = []
    batch = [_req("a"), _req("bad"), _req("c")]
    out = isolate_failures(batch, _echo_unless_bad(calls))
    assert [c.ok for c in out] == [True, False, True]
    assert [c.text for c in out] == ["a", "", "c"]
    assert [c.request_hash for c in out] == [r.key() for r in batch]
    err = out[1].error or ""
    assert err.startswith("ValueError: a bad request x") and "\n" not in err
    assert len(err) == len("ValueError: ") + 300
    assert calls == [3, 1, 1, 1]


@pytest.mark.parametrize("size", [1, 3])
def test_give_up_fails_the_whole_call_without_retrying(size: int) -> None:
    calls: list[int] = []
    seen: list[BaseException] = []

    def give_up(exc: BaseException) -> bool:
        seen.append(exc)
        return True

    batch = [_req("bad")] + [_req(str(i)) for i in range(size - 1)]
    out = isolate_failures(batch, _echo_unless_bad(calls), give_up)
    assert [c.ok for c in out] == [False] * size
    assert len({c.error for c in out}) == 1
    assert calls == [size] and len(seen) == 1
