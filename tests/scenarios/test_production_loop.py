"""Issue 16's acceptance, offline: an application on the openai SDK calls its model through
`still proxy`; `still run` distils a student from the recorded traffic alone (the model is
gone by then); `still serve STUDENT --shadow TEACHER` answers with that student while the
teacher is asked in the background; `still monitor` reads the agreement back."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
import yaml
from click.testing import CliRunner

from still.cli import main
from still.shadow import read_shadow
from still.store import Store
from still.testing import FaultyServer
from test_helpers.proxy import KEY, ProxyServer
from test_helpers.shadow import ServeProcess
from test_helpers.traffic import SYSTEM, TICKETS

TRAIN = {"epochs": 1, "batch_size": 4, "learning_rate": 0.001, "lora_r": 4}


def _ask(client: openai.OpenAI, text: str, model: str = "gpt-4o-mini", **extra: object) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        max_tokens=8,
        **extra,  # type: ignore[arg-type]
    )
    return reply.choices[0].message.content or ""


def test_record_through_the_proxy_distil_then_shadow_the_student(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STILL_API_KEY", raising=False)
    tickets = [(route, text) for route, texts in TICKETS.items() for text in texts]
    prod = tmp_path / "prod.db"

    # 1. record: the application changes only its base URL and key
    with FaultyServer(faults=False) as upstream, ProxyServer(upstream.url, prod) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
        for route, text in tickets:
            assert _ask(client, text, metadata={"app": "support-triage", "route": route}) == (
                f"echo: {text}"
            )
        assert proxy.recorder.flush()
        teacher = upstream.ref("gpt-4o-mini")
        recorded_as = f"{upstream.url}#gpt-4o-mini"

    # 2. distil from what was recorded: the upstream is gone, so any teacher call would fail
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump({
        "name": "triage",
        "data": {"source": "store:prod.db",
                 "store": {"model": recorded_as, "metadata": {"app": "support-triage"}}},
        "answer": "recorded",
        "split": {"seed": 0, "heldout": 6, "validation": 0},
        "models": {"teacher": teacher, "student": f"local:{tiny_model}"},
        "generation": {"batch_size": 8, "max_tokens": 8},
        "train": TRAIN,
    }))  # fmt: skip
    ran = CliRunner().invoke(main, ["run", str(task)])
    assert ran.exit_code == 0, ran.output
    run_dir = tmp_path / "triage"
    students = [p for p in run_dir.iterdir() if p.name.startswith("distilled-")]
    assert len(students) == 1 and (students[0] / "config.json").is_file()
    report = json.loads((run_dir / "report.json").read_text())
    assert {r["role"] for r in report["results"]} >= {"teacher", "distilled"}
    with Store(run_dir / "still.db") as s:
        assert s.count(errors=True) == 0  # no call to the teacher was made, none failed
        assert len(s.list(metadata={"role": "teacher"})) == len(tickets)

    # 3. shadow: the student answers every call; the teacher is asked about each in the
    # background, and both answers and their agreement are stored
    shadow_db = tmp_path / "shadow.db"
    student = f"local:{students[0].resolve()}"
    with FaultyServer(faults=False) as live_teacher:
        args = [student, "--name", "student", "--shadow", live_teacher.ref("gpt-4o-mini"),
                "--sample", "1", "--db", str(shadow_db), "--seed", "0"]  # fmt: skip
        with ServeProcess(args, tmp_path / "serve.log") as serve:
            client = openai.OpenAI(base_url=serve.base_url, api_key="none", max_retries=0)
            asked = [text for _, text in tickets[:6]]
            for text in asked:
                _ask(client, text, "student", extra_headers={"X-Still-Tags": "app=support-triage"})
            assert serve.stop() == 0  # Ctrl-C: the shadow stores what it still holds
        teacher_saw = [b["messages"][-1]["content"] for b in live_teacher.bodies]
    assert sorted(teacher_saw) == sorted(asked)  # every sampled call, once
    with Store(shadow_db) as store:
        records = read_shadow(store)
    assert len(records) == len(asked)
    assert all(r.model == student and r.agree is not None for r in records)
    assert all(r.tags.get("app") == "support-triage" for r in records)

    # 4. monitor: the agreement per tag, as a script would read it
    shown = CliRunner().invoke(main, ["monitor", "--db", str(shadow_db), "--json"])
    assert shown.exit_code == 0, shown.output
    rows = {r["tag"]: r for r in json.loads(shown.output)}
    agreed = sum(bool(r.agree) for r in records)
    assert rows["app=support-triage"]["agreement"]["n"] == len(asked)
    assert rows["app=support-triage"]["agreement"]["k"] == agreed
