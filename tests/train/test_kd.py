"""Knowledge distillation over the label set on a tiny real model: the divergences are the
textbook ones, the student's label scores are exactly what the scorer uses at inference,
and training moves the student's label distribution onto the teacher's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from still.errors import TrainError
from still.models import get_model
from still.tasks import TrainSpec
from still.train import train_kd
from still.train._common import load_student
from still.train.kd import divergence, encode, label_scores
from still.types import Message, Request

LABELS = ["abbreviation", "human", "location", "number"]
# the teacher's log-scores: confident on one label, unsure between two others
TEACHER = {
    "Who wrote the play?": [-6.0, -0.1, -3.0, -6.0],
    "Where is the river?": [-6.0, -2.5, -0.2, -5.0],
    "How many days?": [-5.0, -6.0, -4.0, -0.05],
    "What does NASA stand for?": [-0.3, -2.0, -6.0, -6.0],
}
SYSTEM = "Classify the question."


def _row(q: str) -> dict[str, object]:
    return {
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
        "answer": LABELS[max(range(4), key=lambda i: TEACHER[q][i])],
        "teacher_logprobs": dict(zip(LABELS, TEACHER[q], strict=True)),
    }


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "train-soft.jsonl"
    path.write_text("".join(json.dumps(_row(q)) + "\n" for q in TEACHER for _ in range(3)))
    return path


def test_divergences_match_their_definitions() -> None:
    from scipy.spatial.distance import jensenshannon
    from scipy.special import rel_entr, softmax

    s = torch.tensor([[0.3, -1.2, 2.0], [1.0, 1.0, -3.0]])
    t = torch.tensor([[-0.5, 0.1, 1.7], [2.0, -1.0, 0.0]])
    ps, pt = softmax(s.numpy(), axis=-1), softmax(t.numpy(), axis=-1)
    fwd = rel_entr(pt, ps).sum(-1).mean()
    rev = rel_entr(ps, pt).sum(-1).mean()
    js = (jensenshannon(pt, ps, axis=-1) ** 2).mean()
    assert float(divergence(s, t, "forward_kl")) == pytest.approx(fwd, rel=1e-5)
    assert float(divergence(s, t, "reverse_kl")) == pytest.approx(rev, rel=1e-5)
    assert float(divergence(s, t, "jsd", beta=0.5)) == pytest.approx(js, rel=1e-5)
    # temperature: both softened, times T^2
    p2s, p2t = softmax(s.numpy() / 2, axis=-1), softmax(t.numpy() / 2, axis=-1)
    want = 4 * rel_entr(p2t, p2s).sum(-1).mean()
    assert float(divergence(s, t, "forward_kl", temperature=2.0)) == pytest.approx(want, 1e-5)
    assert float(divergence(t, t, "jsd", beta=0.3)) == pytest.approx(0.0, abs=1e-6)


def test_student_label_scores_are_what_the_scorer_computes(tiny_model: Path) -> None:
    """Training and inference must agree on what 'the student's distribution' is."""
    student = load_student(tiny_model, TrainSpec(method="full"))
    student.model.eval()
    rows = [encode(student.tokenizer, _row(q), 256) for q in TEACHER]
    assert all(r is not None for r in rows)
    with torch.no_grad():
        got = label_scores(student.model, rows, student.pad, student.device)  # type: ignore[arg-type]
    local = get_model(f"local:{tiny_model}")
    reqs = [
        Request(model="m", messages=(Message(role="system", content=SYSTEM),
                                     Message(role="user", content=q)), labels=tuple(LABELS))
        for q in TEACHER
    ]  # fmt: skip
    want = [[c.label_logprobs[lab] for lab in LABELS] for c in local.complete(reqs)]  # type: ignore[index]
    assert got.shape == (4, 4)
    assert got.flatten().tolist() == pytest.approx(sum(want, []), abs=2e-4)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_kd_moves_the_students_label_distribution_onto_the_teachers(
    tiny_model: Path, tmp_path: Path, kind: str
) -> None:
    data = _data(tmp_path)
    spec = TrainSpec.model_validate(
        {"recipe": "kd", "method": "lora", "epochs": 4, "batch_size": 4,
         "learning_rate": 5e-3, "lora_r": 8, "kd": {"divergence": kind, "temperature": 1.0}}
    )  # fmt: skip

    def to_teacher(model_dir: Path) -> float:
        local = get_model(f"local:{model_dir}")
        reqs = [
            Request(model="m", messages=(Message(role="system", content=SYSTEM),
                                         Message(role="user", content=q)), labels=tuple(LABELS))
            for q in TEACHER
        ]  # fmt: skip
        got = local.complete(reqs)
        s = torch.tensor([[c.label_logprobs[x] for x in LABELS] for c in got])  # type: ignore[index]
        return float(divergence(s, torch.tensor(list(TEACHER.values())), kind))

    out = tmp_path / "kd"
    result = train_kd(tiny_model, data, out, spec)
    assert result.recipe == f"kd-{kind}" and result.examples == 12 and result.steps == 12
    assert math.isfinite(result.last_loss) and result.last_loss < result.first_loss
    assert result.tokens > 0 and result.tokens_per_s > 0
    before, after = (
        load_file(str(tiny_model / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    assert to_teacher(out) < 0.5 * to_teacher(tiny_model)
    assert json.loads((out / "train.json").read_text())["recipe"] == f"kd-{kind}"


def test_a_malformed_soft_row_names_file_and_line(tiny_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "train-soft.jsonl"
    path.write_text(json.dumps(_row("How many days?")) + "\n" + '{"messages": []}\n')
    with pytest.raises(TrainError, match=r"train-soft.jsonl:2: expected an object"):
        train_kd(tiny_model, path, tmp_path / "out", TrainSpec(recipe="kd"))
