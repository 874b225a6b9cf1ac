"""The shadow loop end to end, as a user runs it: `still serve STUDENT --shadow TEACHER` in its
own process on loopback, an application on the openai SDK, then `still monitor`."""

from __future__ import annotations

import json
from pathlib import Path

import openai
from click.testing import CliRunner

from still.cli import main
from still.shadow import read_shadow
from still.store import Store
from test_helpers import LABELS
from test_helpers.shadow import ServeProcess, label_body


def test_a_scripted_student_is_shadowed_over_http_and_monitored(tmp_path: Path) -> None:
    db = tmp_path / "prod.db"
    # the student always answers the first label; the teacher names the question's label
    args = ["scripted:first-label", "--name", "student", "--shadow", "scripted:echo",
            "--sample", "1", "--db", str(db), "--seed", "1"]  # fmt: skip
    questions = [f"question {i} about {LABELS[i % 3]}" for i in range(12)]
    with ServeProcess(args, tmp_path / "serve.log") as serve:
        client = openai.OpenAI(base_url=serve.base_url, api_key="none", max_retries=0)
        for i, q in enumerate(questions):
            body = label_body(q, LABELS)
            asked = {"model": "student", "messages": body["messages"],
                     "response_format": body["response_format"],
                     "metadata": {"app": "triage"},
                     "extra_headers": {"X-Still-Tags": f"shard={i % 2}"}}  # fmt: skip
            if i % 4 == 3:  # some streamed
                chunks = client.chat.completions.create(**asked, stream=True)
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                text = client.chat.completions.create(**asked).choices[0].message.content or ""
            assert json.loads(text) == {"label": LABELS[0]}
        assert serve.stop() == 0  # Ctrl-C: the shadow stores what it still holds
    with Store(db) as store:
        records = read_shadow(store)
    assert len(records) == 12
    assert [r.agree for r in records] == [i % 3 == 0 for i in range(12)]
    got = CliRunner().invoke(main, ["monitor", "--db", str(db), "--json"])
    assert got.exit_code == 0, got.output
    rows = {r["tag"]: r for r in json.loads(got.output)}
    assert set(rows) == {"(all)", "app=triage", "shard=0", "shard=1"}
    assert (rows["app=triage"]["agreement"]["k"], rows["app=triage"]["agreement"]["n"]) == (4, 12)
    assert rows["shard=0"]["agreement"]["n"] == 6
