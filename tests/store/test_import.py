"""`still store import`: stored-completion listings and chat logs become stored completions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from still.cli import main
from still.curate import read_chat_jsonl
from still.store import ImportFormatError, Store, read_traffic

ASSETS = Path(__file__).parents[1] / "assets" / "openai"
LISTING = ASSETS / "stored_completions.json"


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
    assert first.metadata == {
        "app": "support-triage",
        "env": "prod",
        "source": "import",
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
