"""`still store import`: stored-completion listings and chat logs become stored completions."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from still.cli import main
from still.curate import read_chat_jsonl
from still.store import ImportFormatError, Store, read_traffic, traffic_rows
from still.types import Completion, Message, Request, SamplingParams

ASSETS = Path(__file__).parents[1] / "assets" / "openai"
LISTING = ASSETS / "stored_completions.json"
REQUEST_LOG = ASSETS / "request_log.jsonl"  # requests with and without sampling parameters


def test_listing_with_message_files_imports_everything_it_holds() -> None:
    res = read_traffic(LISTING, messages_dir=ASSETS / "messages", metadata={"batch": "jan"})
    assert [c.id for c in res.completions] == [
        "chatcmpl-AyPNinnUqUDYo9SAdA52NobMflmj2",
        "chatcmpl-AyPNjXk2Zq0bLmXhRg8tCvW4aNp1E",
    ]
    first, second = res.completions
    assert first.model == "openai:gpt-4o-mini-2024-07-18"
    assert [m.role for m in first.request.messages] == ["system", "user"]  # developer -> system
    assert first.request.messages[1].content == "I was charged twice for my order."
    assert second.request.messages[1].content == "Where is my parcel? It is a week late."
    assert first.text == "billing" and first.finish_reason == "stop"
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (29, 2)
    assert first.created_at == 1738960610
    assert first.request.params.seed == 4944116822809979520
    # the listing gives temperature, top_p and seed; it has no max_tokens or stop
    assert first.request.unknown_params == ("max_tokens", "stop")
    assert first.metadata == {
        "app": "support-triage",
        "env": "prod",
        "source": "import",
        "response_model": "gpt-4o-mini-2024-07-18",
        "batch": "jan",
    }
    # gpt-4o-mini's dated snapshot is priced like gpt-4o-mini
    assert first.cost == pytest.approx((29 * 0.15 + 2 * 0.60) / 1e6)


def test_a_listing_without_messages_says_where_to_get_them() -> None:
    with pytest.raises(ImportFormatError, match=r"item 0: .*no input messages.*--messages"):
        read_traffic(LISTING)


def test_chat_jsonl_and_request_logs(tmp_path: Path) -> None:
    f = tmp_path / "log.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
        {
            "request": {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0.2,
                "max_completion_tokens": 50,
                "stop": "\n",
            },
            "response": {
                "id": "chatcmpl-x",
                "model": "gpt-4o-2024-08-06",
                "choices": [
                    {"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 8, "completion_tokens": 1},
            },
        },
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    chat, log = read_traffic(f, model="azure:prod-4o").completions
    assert chat.text == "4" and chat.request.messages[-1].content == "2+2?"
    assert chat.model == log.model == "azure:prod-4o"
    assert log.id == "chatcmpl-x" and log.text == "hello"
    p = log.request.params
    assert (p.temperature, p.max_tokens, p.stop) == (0.2, 50, ("\n",))
    assert log.request.unknown_params == ("seed", "top_p")
    assert chat.request.unknown_params == ("max_tokens", "seed", "stop", "temperature", "top_p")
    assert log.metadata["response_model"] == "gpt-4o-2024-08-06"
    # a deployment name has no price: the model the response names prices it
    assert log.cost == pytest.approx((8 * 2.50 + 1 * 10.00) / 1e6)


def _stored_request(db: Path, completion_id: str) -> dict[str, object]:
    """The request column of a stored row, as SQLite holds it (not through pydantic)."""
    con = sqlite3.connect(db)
    try:
        (text,) = con.execute(
            "SELECT request FROM completions WHERE id = ?", (completion_id,)
        ).fetchone()
    finally:
        con.close()
    out: dict[str, object] = json.loads(text)
    return out


def test_parameters_the_log_lacks_are_stored_as_unknown_not_invented(tmp_path: Path) -> None:
    bare, given = read_traffic(REQUEST_LOG).completions
    assert bare.request.unknown_params == ("max_tokens", "seed", "stop", "temperature", "top_p")
    assert given.request.unknown_params == ("top_p",)  # seed and stop null: none was set
    assert (given.request.params.temperature, given.request.params.max_tokens) == (0.3, 5)

    db = tmp_path / "prod.db"
    with Store(db) as s:
        assert s.put_new([bare, given]) == 2
        assert s.get(bare.id) == bare and s.get(given.id) == given  # read back unchanged
        assert s.lookup(bare.request.key()) == bare  # the hash is the stored request's
        s.export_jsonl(tmp_path / "all.jsonl")
    stored = _stored_request(db, bare.id)
    assert stored["unknown_params"] == ["max_tokens", "seed", "stop", "temperature", "top_p"]
    assert stored["params"] == dict.fromkeys(("temperature", "top_p", "max_tokens", "seed", "stop"))
    assert _stored_request(db, given.id)["params"] == {
        "temperature": 0.3,
        "top_p": None,
        "max_tokens": 5,
        "seed": None,
        "stop": [],
    }
    # the defaults once invented for a missing temperature and max_tokens are nowhere
    for where in (
        bare.request.canonical(),
        stored,
        json.loads((tmp_path / "all.jsonl").read_text().splitlines()[0])["request"],
    ):
        params = where["params"]
        assert isinstance(params, dict)
        assert params["temperature"] is None and params["max_tokens"] is None
    # and an unknown parameter is not the same request as one set to the old default
    invented = Request(
        model=bare.request.model,
        messages=bare.request.messages,
        params=SamplingParams(temperature=0.0, max_tokens=32),
    )
    assert invented.key() != bare.request.key()


def test_the_requested_model_wins_over_the_response_snapshot(tmp_path: Path) -> None:
    c = read_traffic(REQUEST_LOG).completions[0]
    assert c.model == "openai:gpt-4o-mini"
    assert c.metadata["response_model"] == "gpt-4o-mini-2024-07-18"
    assert c.cost == pytest.approx((30 * 0.15 + 2 * 0.60) / 1e6)

    # a stored completion whose saved request names its model: that model, not the item's
    item = json.loads(LISTING.read_text())["data"][0]
    item["request"] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "I was charged twice for my order."}],
        "max_tokens": 4,
    }
    f = tmp_path / "listing.json"
    f.write_text(json.dumps({"object": "list", "data": [item]}))
    (got,) = read_traffic(f).completions
    assert got.model == "openai:gpt-4o-mini"
    assert got.metadata["response_model"] == "gpt-4o-mini-2024-07-18"
    assert got.request.params.max_tokens == 4 and "max_tokens" not in got.request.unknown_params


@pytest.mark.parametrize("cid", ["../outside", "nested/../../outside", "..", "a\\b"])
def test_a_completion_id_that_is_not_a_file_name_is_refused(tmp_path: Path, cid: str) -> None:
    messages = tmp_path / "messages"
    messages.mkdir()
    # a file the traversal would reach, so reading it would have succeeded
    (tmp_path / "outside.json").write_text(
        json.dumps({"data": [{"role": "user", "content": "a secret"}]})
    )
    item = {**json.loads(LISTING.read_text())["data"][0], "id": cid}
    listing = tmp_path / "listing.json"
    listing.write_text(json.dumps({"object": "list", "data": [item]}))
    with pytest.raises(ImportFormatError) as err:
        read_traffic(listing, messages_dir=messages)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{listing}: item 0: completion id {cid!r} is not a plain file name")
    res = read_traffic(listing, messages_dir=messages, skip_bad=True)
    assert res.completions == [] and len(res.bad) == 1


def test_an_ordinary_request_keeps_its_key_and_stored_form() -> None:
    """Regression pin: the keys below were computed before `unknown_params` existed; if
    they change, every stored run loses its cache."""
    plain = Request(
        model="openai:gpt-4o-mini",
        messages=(
            Message(role="system", content="Answer with one word."),
            Message(role="user", content="I was charged twice."),
        ),
    )
    assert plain.key() == "88dad7515a6d43ed2beb70991e45f94b17d5345018a4d0d65258e25e30212af1"
    assert plain.model_dump_json() == (
        '{"model":"openai:gpt-4o-mini","messages":[{"role":"system","content":"Answer with '
        'one word."},{"role":"user","content":"I was charged twice."}],"params":{"temperature"'
        ':0.0,"top_p":1.0,"max_tokens":32,"seed":null,"stop":[]},"labels":null,"logprobs":'
        'false,"top_logprobs":0,"json_schema":null,"metadata":{}}'
    )
    full = Request(
        model="local:./student",
        messages=(Message(role="user", content="2+2?"),),
        params=SamplingParams(temperature=0.7, top_p=0.9, max_tokens=64, seed=7, stop=("\n",)),
        labels=("yes", "no"),
        logprobs=True,
        top_logprobs=5,
        json_schema={"type": "object"},
        metadata={"task": "t"},
    )
    assert full.key() == "eec08c28e61282562f9daacdcf27008efdf821e33b1533361f01503ac5e4e20f"
    # a store written before the field existed reads back as the same request
    assert Request.model_validate_json(plain.model_dump_json()) == plain


def test_traffic_rows_reads_imported_completions_back_as_training_rows(tmp_path: Path) -> None:
    db = tmp_path / "prod.db"
    imported = read_traffic(LISTING, messages_dir=ASSETS / "messages").completions
    with Store(db) as s:
        s.put_new(imported)
        s.put_new(read_traffic(REQUEST_LOG, metadata={"env": "staging"}).completions)
        # a completion still made itself, with the same tags: not imported traffic
        own = Completion(
            request=Request(
                model="openai:gpt-4o-mini", messages=(Message(role="user", content="q"),)
            ),
            text="billing",
            metadata={"app": "support-triage", "env": "prod"},
        )
        s.put(own)
        s.put(own.model_copy(update={"id": "cmpl-failed", "error": "timeout", "text": ""}))
        assert len(traffic_rows(s)) == 4

    rows = traffic_rows(db, metadata={"env": "prod"})
    assert [r.id for r in rows] == [c.id for c in imported]
    messages, answer, metadata, _ = rows[1]
    assert [m.content for m in messages] == [
        "Route the ticket: billing, shipping or other. Answer with one word.",
        "Where is my parcel? It is a week late.",
    ]
    assert answer == "shipping" and metadata["app"] == "support-triage"
    assert [r.answer for r in traffic_rows(db, model="openai:gpt-4o-mini")] == [
        "billing",
        "shipping",
    ]
    assert traffic_rows(db, metadata={"env": "dev"}) == []

    missing = tmp_path / "nope.db"
    with pytest.raises(FileNotFoundError, match="no store at .*nope.db"):
        traffic_rows(missing)
    assert not missing.exists()


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("{not json", "not JSON"),
        ('{"messages": [{"role": "user", "content": "q"}]}', "assistant's answer"),
        (
            '{"messages": [{"role": "tool", "content": "x"}, '
            '{"role": "assistant", "content": "a"}]}',
            "role 'tool'",
        ),
        ('{"hello": 1}', "not a stored completion"),
        (
            '{"messages": [{"role": "user", "content": [{"type": "image_url"}]}, '
            '{"role": "assistant", "content": "a"}]}',
            "'image_url' is not text",
        ),
        (
            '{"temperature": "hot", "messages": [{"role": "user", "content": "q"}, '
            '{"role": "assistant", "content": "a"}]}',
            "temperature",
        ),
    ],
)
def test_a_malformed_row_names_its_file_and_line(tmp_path: Path, row: str, reason: str) -> None:
    good = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    f = tmp_path / "log.jsonl"
    f.write_text(f"{good}\n{row}\n")
    with pytest.raises(ImportFormatError, match=rf"log.jsonl:2: .*{reason}"):
        read_traffic(f)
    res = read_traffic(f, skip_bad=True)
    assert len(res.completions) == 1 and res.bad and "log.jsonl:2" in res.bad[0]


def test_cli_import_is_idempotent_and_exports_training_data(
    tmp_path: Path, tiny_model: Path
) -> None:
    db = tmp_path / "prod.db"
    runner = CliRunner()
    args = [
        "store",
        "import",
        "--db",
        str(db),
        str(LISTING),
        "--messages",
        str(ASSETS / "messages"),
    ]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "2 imported" in first.output
    again = runner.invoke(main, args)
    assert "0 imported" in again.output and "2 were already there" in again.output
    with Store(db) as s:
        assert s.count() == 2
        assert s.count(metadata={"source": "import", "app": "support-triage"}) == 2

    out = tmp_path / "train.jsonl"
    res = runner.invoke(
        main,
        ["store", "export", "--db", str(db), "--format", "chat", "--meta", "env=prod", str(out)],
    )
    assert res.exit_code == 0, res.output
    convs = read_chat_jsonl(out)
    assert [c[-1]["content"] for c in convs] == ["billing", "shipping"]

    # the exported traffic trains a student: real gradient steps on the tiny model
    from still.tasks import TrainSpec
    from still.train import train_sft

    result = train_sft(tiny_model, out, tmp_path / "student", TrainSpec(epochs=1, batch_size=2))
    assert result.examples == 2 and result.steps >= 1


def test_cli_import_bad_file_fails_with_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"messages": []}\n')
    res = CliRunner().invoke(main, ["store", "import", "--db", str(tmp_path / "x.db"), str(f)])
    assert res.exit_code == 1 and "bad.jsonl:1" in res.output
