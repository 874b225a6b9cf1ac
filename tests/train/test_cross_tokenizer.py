"""KD across tokenizers (train.kd.cross_tokenizer): the ULD distance, the span alignment on
a constructed pair and on the bundled SmolLM2 and Gemma tokenizers, and training a tiny
student whose tokenizer differs from its teacher's, from a local teacher and from an
endpoint's stored top-k."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from conftest import build_tiny_model
from still.pipeline import capture_role, export_stage, open_run, train_stage
from still.tasks import TrainSpec
from still.train._cross_tokenizer import (
    CrossRow,
    Pair,
    StudentVocabulary,
    cross_loss,
    encode_endpoint,
    encode_local,
    pair_positions,
    text_tokens,
    uld,
)
from still.train._losses import TokenizerMismatch
from still.train.kd_tokens import train_kd_tokens
from test_helpers import write_task
from test_helpers.serve import KEY, Server

QA = [("Who wrote the play?", "human"), ("Where is the river?", "location"),
      ("How many days?", "number"), ("What does NASA stand for?", "abbreviation"),
      ("What is a cat?", "entity description")]  # fmt: skip


# -- the ULD distance ---------------------------------------------------------------------


def test_uld_is_zero_for_identical_sorted_distributions_and_positive_otherwise() -> None:
    logits = torch.randn(4, 50)
    assert uld(logits, torch.softmax(logits, -1)).abs().max() < 1e-6
    # the same probabilities on other ids, in a larger vocabulary padded with zeros
    probs = torch.softmax(logits, -1)
    other = torch.zeros(4, 80)
    other[:, torch.randperm(80)[:50]] = probs
    assert uld(logits, other).abs().max() < 1e-6
    # a smaller teacher vocabulary holding the same sorted mass (its tail is zeros)
    peaked = torch.tensor([[5.0, 2.0, -1.0] + [-1e4] * 7])
    assert uld(peaked, torch.softmax(peaked[:, :3], -1)).abs().max() < 1e-5
    # a different confidence profile is penalised, whatever the vocabularies
    flat = torch.full((1, 3), 1 / 3)
    assert float(uld(peaked, flat)) > 0.5
    assert (uld(logits, torch.softmax(2 * logits, -1)) > 1e-3).all()


def test_uld_on_an_endpoints_partial_top_k_compares_only_the_known_entries() -> None:
    logits = torch.randn(3, 40)
    probs = torch.softmax(logits, -1).sort(-1, descending=True).values
    top = torch.nn.functional.pad(probs[:, :5], (0, 3))  # top-5 known, zero-padded to 8
    assert uld(logits, top, partial=True).abs().max() < 1e-6
    assert float(uld(logits, top, partial=False).min()) > 0  # as a whole vector it is not
    shifted = top.clone()
    shifted[:, 0] *= 0.5
    assert (uld(logits, shifted, partial=True) > 1e-3).all()


def test_uld_moves_the_student_onto_the_teachers_profile() -> None:
    torch.manual_seed(0)
    s = torch.zeros(2, 30, requires_grad=True)
    t = torch.softmax(torch.randn(2, 45) * 3, -1)
    opt = torch.optim.Adam([s], lr=0.1)
    first = uld(s, t).mean().item()
    for _ in range(200):
        opt.zero_grad()
        loss = uld(s, t).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


# -- span alignment -----------------------------------------------------------------------


def test_tokens_with_the_same_text_span_are_aligned_and_the_rest_fall_back() -> None:
    teacher = text_tokens([" The", " cat", " sat", "s", "!"], lead=1)
    student = text_tokens(["The", " c", "at", " sats", "!"], lead=0)
    assert [t.span for t in teacher] == [(0, 3), (3, 7), (7, 11), (11, 12), (12, 13)]
    pairs = pair_positions(teacher, student, "align", lead=(" ", ""), ends=True)
    assert pairs == [
        Pair(0, 0, True, (" ", "")),  # "The" and " The": the teacher's leading space cut
        Pair(1, 1),  # " c": ULD against " cat", the teacher token under its first letter
        Pair(2, 1),  # "at" lies inside " cat" too
        Pair(3, 2),  # " sats" starts where " sat" does
        Pair(4, 4, True),  # "!"
        Pair(5, 5, True),  # the two end-of-turn tokens
    ]
    # uld: the i-th of each, as far as the shorter answer goes
    assert pair_positions(teacher, student[:3], "uld") == [Pair(0, 0, lead=("", "")),
                                                           Pair(1, 1), Pair(2, 2)]  # fmt: skip


def test_a_token_ending_inside_a_character_is_never_aligned() -> None:
    class Bytes:  # decodes like a byte-level tokenizer: a split character shows as U+FFFD
        pieces = [b"na", b"\xc3", b"\xafve"]

        def decode(self, ids: list[int]) -> str:
            return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")

    from still.train._cross_tokenizer import decoded_tokens

    tokens = decoded_tokens(Bytes(), [0, 1, 2], lead=0)
    assert [t.span for t in tokens] == [(0, 2), None, None]
    assert tokens[2].end == 5  # "naïve" ends where it should
    teacher = text_tokens(["na", "ï", "ve"], lead=0)
    pairs = pair_positions(teacher, tokens, "align")
    assert [p.aligned for p in pairs] == [True, False, False]


def test_candidates_map_onto_student_ids_through_their_strings() -> None:
    vocab = StudentVocabulary({"The": 1, " The": 2, "A": 3, "<|im_end|>": 9}, {"<eos>"}, 9)
    ids, lps = vocab.candidates({" The": -0.1, " A": -2.0, " Zz": -3.0}, (" ", ""))
    assert (ids, lps) == ([1, 3], [-0.1, -2.0])  # leading space swapped, " Zz" unmapped
    ids, lps = vocab.candidates({"<eos>": -0.2, "The": -1.0}, ("", ""))
    assert (ids, lps) == ([9, 1], [-0.2, -1.0])  # the teacher's end -> the student's end
    # two strings on one student id keep the likelier
    assert vocab.candidates({" The": -3.0, "The": -0.5}, (" ", "")) == ([1], [-0.5])


def _bundled(name: str) -> Path:
    for home in (Path.home() / ".cache" / "still", Path(".pytest_cache") / "still-home"):
        if (home / "models" / name / "tokenizer.json").is_file():
            return home / "models" / name
    pytest.skip(f"the bundled {name} is not converted on this machine")


def test_alignment_of_the_bundled_gemma_teacher_and_smollm2_student() -> None:
    """The spans agree with each tokenizer's own character offsets: tokens whose offsets
    coincide are aligned, the others (a word split differently) fall back to ULD; the
    base teacher's leading space is cut off its first token."""
    from transformers import AutoTokenizer

    s_tok = AutoTokenizer.from_pretrained(_bundled("smollm2-135m-instruct"))
    t_tok = AutoTokenizer.from_pretrained(_bundled("gemma3-270m"))
    answer = "Oh great, another Monday... naïve café at 12:30!"
    row = {"messages": [{"role": "user", "content": "Sarcastic?"},
                        {"role": "assistant", "content": answer}],
           "teacher_messages": [{"role": "user", "content": "Sarcastic? Answer:"}]}  # fmt: skip
    got = encode_local(s_tok, t_tok, row, 512, "align")
    assert got is not None

    def offsets(tok: Any, text: str, lead: int) -> list[tuple[int, int]]:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return [(max(0, a - lead), b - lead) for a, b in enc["offset_mapping"]]

    s_off = offsets(s_tok, answer, 0)  # a chat student: the answer as it is
    t_off = offsets(t_tok, " " + answer, 1)  # a base teacher: after a space
    assert len(got.answer) == len(s_off) + 1 and len(got.teacher_answer) == len(t_off) + 1
    want = {(j, t_off.index(span)) for j, span in enumerate(s_off) if span in t_off}
    aligned = {(p.student, p.teacher) for p in got.pairs if p.aligned}
    assert aligned == want | {(len(s_off), len(t_off))}  # and the two ends
    assert len(want) < len(s_off)  # some words are split differently ...
    assert len(want) > len(s_off) // 2  # ... most are not
    assert {p.student for p in got.pairs} == set(range(len(got.answer)))  # all distilled
    assert got.pairs[0].lead == (" ", "") and got.pairs[0].aligned
    for p in got.pairs[:-1]:
        if p.aligned:  # the aligned tokens spell the same text
            s_text = s_tok.decode([got.answer[p.student]])
            t_text = str(t_tok.decode([got.teacher_answer[p.teacher]]))
            assert t_text.removeprefix(p.lead[0]) == s_text


# -- training a student with another tokenizer --------------------------------------------


@pytest.fixture(scope="module")
def odd_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chat student whose tokenizer has another vocabulary than tiny_model's."""
    return Path(build_tiny_model(tmp_path_factory.mktemp("odd-student"), vocab_size=300, seed=3))


@pytest.fixture(scope="module")
def base_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base teacher (no chat template: its answers start with a space), 373 tokens."""
    return Path(build_tiny_model(tmp_path_factory.mktemp("base-teacher"), chat=False, seed=1))


def _rows(tmp_path: Path) -> Path:
    path = tmp_path / "train-tokens.jsonl"
    with path.open("w") as f:
        for q, a in QA * 2:
            f.write(json.dumps({
                "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                "teacher_messages": [{"role": "system", "content": "Classify the question."},
                                     {"role": "user", "content": q}],
            }) + "\n")  # fmt: skip
    return path


def _spec(mode: str, **kd: Any) -> TrainSpec:
    return TrainSpec.model_validate({"recipe": "kd", "method": "full", "epochs": 4,
                                     "batch_size": 5, "learning_rate": 3e-3,
                                     "kd": {"cross_tokenizer": mode, **kd}})  # fmt: skip


def _distance(student_dir: Path, teacher_dir: Path, data: Path, mode: str) -> float:
    """The distillation term alone (cross_loss minus the cross-entropy) over every row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from still.train._losses import answer_logits
    from still.train.kd_topk import vocabulary_by_text

    s_tok, t_tok = (AutoTokenizer.from_pretrained(p) for p in (student_dir, teacher_dir))
    auto: Any = AutoModelForCausalLM
    s, t = (auto.from_pretrained(p).eval() for p in (student_dir, teacher_dir))
    rows = [encode_local(s_tok, t_tok, json.loads(x), 256, mode)
            for x in data.read_text().splitlines()]  # fmt: skip
    kept = [r for r in rows if r is not None]
    with torch.no_grad():
        tl, _ = answer_logits(t, [r.teacher_prompt for r in kept],
                              [r.teacher_answer for r in kept], 0, "cpu", len(t_tok))  # fmt: skip
        sl, targets = answer_logits(s, [r.student_prompt for r in kept],
                                    [r.answer for r in kept], 0, "cpu", len(s_tok))  # fmt: skip
        lp = torch.log_softmax(tl, -1)
        views, at = [], 0
        for r in kept:
            own = lp[at : at + len(r.teacher_answer)]
            at += len(r.teacher_answer)
            views.append((own.exp(), lambda i, own=own: {
                str(t_tok.decode([k])): float(own[i, k]) for k in own[i].topk(20).indices.tolist()
            }))  # fmt: skip
        vocab = StudentVocabulary(vocabulary_by_text(s_tok), {"<|endoftext|>"}, s_tok.eos_token_id)
        spec = _spec(mode)
        total = cross_loss(sl, targets, kept, views, vocab, spec, partial=False)
        ce = torch.nn.functional.cross_entropy(sl, targets)
    return float(total - ce)


@pytest.mark.parametrize("mode", ["uld", "align"])
def test_a_student_with_another_tokenizer_learns_from_a_local_teacher(
    mode: str, odd_student: Path, base_teacher: Path, tmp_path: Path
) -> None:
    data = _rows(tmp_path)
    out = tmp_path / "kd"
    result = train_kd_tokens(odd_student, base_teacher, data, out, _spec(mode))
    assert result.recipe == f"kd-tokens-{mode}" and result.examples == 10 and result.steps == 8
    assert all(math.isfinite(x) for x in result.losses)
    assert result.last_loss < 0.8 * result.first_loss
    before, after = (load_file(str(p / "model.safetensors")) for p in (odd_student, out))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the distillation term pulls the student towards the teacher: closer than the same
    # training on the cross-entropy alone leaves it
    sft = tmp_path / "ce-only"
    train_kd_tokens(odd_student, base_teacher, data, sft, _spec(mode, cross_weight=0.0))
    assert _distance(out, base_teacher, data, mode) < _distance(sft, base_teacher, data, mode)


def test_align_uses_the_teachers_strings_where_tokens_coincide(
    odd_student: Path, base_teacher: Path, tmp_path: Path
) -> None:
    """On the tiny pair some answer tokens coincide (aligned: KL over mapped candidates)
    and some do not (ULD); the end-of-turn tokens are aligned."""
    from transformers import AutoTokenizer

    s_tok, t_tok = (AutoTokenizer.from_pretrained(p) for p in (odd_student, base_teacher))
    rows = [encode_local(s_tok, t_tok, json.loads(x), 256, "align")
            for x in _rows(tmp_path).read_text().splitlines()]  # fmt: skip
    pairs = [p for r in rows if r is not None for p in r.pairs]
    assert any(p.aligned for p in pairs) and not all(p.aligned for p in pairs)
    for r in rows:
        assert r is not None and r.pairs[-1] == Pair(len(r.answer) - 1,
                                                     len(r.teacher_answer) - 1, True)  # fmt: skip


def test_a_teacher_with_another_tokenizer_is_refused_only_without_cross_tokenizer(
    odd_student: Path, tiny_model: Path, tmp_path: Path
) -> None:
    data = _rows(tmp_path)
    with pytest.raises(TokenizerMismatch, match=r"train\.kd\.cross_tokenizer: uld or align"):
        train_kd_tokens(odd_student, tiny_model, data, tmp_path / "x", TrainSpec(recipe="kd"))
    spec = _spec("uld").model_copy(update={"epochs": 1.0})
    assert train_kd_tokens(odd_student, tiny_model, data, tmp_path / "y", spec).steps == 2


def test_cross_tokenizer_through_the_pipeline_with_a_local_teacher(
    odd_student: Path, tiny_model: Path, tmp_path: Path
) -> None:
    task = write_task(tmp_path, student=f"local:{odd_student}", teacher=f"local:{tiny_model}",
                      labels=None, graders=[{"type": "string_check", "name": "exact"}],
                      generation={"mode": "generate", "batch_size": 4, "max_tokens": 4},
                      train={"recipe": "kd", "epochs": 1, "lora_r": 4,
                             "kd": {"cross_tokenizer": "align"}})  # fmt: skip
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    export_stage(run, keep="parsed")
    info = train_stage(run)
    assert info["recipe"] == "kd-tokens-align" and info["examples"] > 0


# -- from an endpoint's stored top-k ------------------------------------------------------


def test_an_endpoint_row_pairs_the_teachers_stored_tokens_with_the_students(
    odd_student: Path,
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(odd_student)
    row: dict[str, Any] = {"messages": [{"role": "user", "content": "Who?"},
                        {"role": "assistant", "content": "human being"}],
           "teacher_messages": [{"role": "user", "content": "Who?"}],
           "teacher_tokens": [" hum", "an", " being", "\n"],
           "teacher_top_logprobs": [{" hum": -0.1, " h": -2.5}, {"an": -0.2},
                                    {" being": -0.3, " be": -1.5}, {"\n": -0.1}],
           "teacher_token_logprobs": [-0.1, -0.2, -0.3, -0.1]}  # fmt: skip
    got, too_long = encode_endpoint(tok, row, 256, "align")
    assert got is not None and not too_long
    assert got.top == row["teacher_top_logprobs"][:3]  # the tokens that spell the answer
    pieces = [str(tok.decode([i])) for i in got.answer[:-1]]
    assert "".join(pieces) == "human being"
    for p in got.pairs:
        t_start = len("".join(row["teacher_tokens"][: p.teacher]).lstrip()) if p.teacher else 0
        s_start = len("".join(pieces[: p.student]))
        assert t_start <= s_start  # each student token meets the teacher token under it
    assert all(p.student < len(got.answer) - 1 for p in got.pairs)  # no teacher end stored
    del row["teacher_token_logprobs"]
    row["teacher_top_logprobs"][1] = {"x": -1.0}  # the chosen "an" is not among them
    assert encode_endpoint(tok, row, 256, "align")[0] is None


@pytest.fixture
def endpoint(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("STILL_API_KEY", KEY)
    with Server(tiny_model, api_key=KEY) as s:
        yield s


@pytest.mark.parametrize("mode", ["uld", "align"])
def test_a_student_with_another_tokenizer_learns_from_an_endpoints_top_k(
    mode: str, endpoint: Server, odd_student: Path, tmp_path: Path
) -> None:
    train = {"recipe": "kd", "method": "full", "epochs": 3, "batch_size": 4,
             "learning_rate": 3e-3, "kd": {"cross_tokenizer": mode}}  # fmt: skip
    task = write_task(tmp_path, student=f"local:{odd_student}", teacher=endpoint.ref, n=24,
                      heldout=6, labels=None, graders=[{"type": "string_check", "name": "exact"}],
                      generation={"mode": "generate", "max_tokens": 6, "batch_size": 4,
                                  "top_logprobs": 5}, train=train)  # fmt: skip
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    export_stage(run, keep="parsed")
    info = train_stage(run)
    assert info["recipe"] == f"kd-topk-{mode}" and info["examples"] > 0
    losses = info["losses"]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_an_endpoint_batchs_loss_is_the_cross_entropy_plus_the_distance() -> None:
    """cross_weight scales the distillation term; with it 0 only the cross-entropy is left,
    and a student that matches the teacher's top-k exactly adds nothing."""
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]))
    targets = torch.tensor([0, 1])
    row = CrossRow([1], [0, 1], [Pair(0, 0), Pair(1, 1)], [], [], [{"a": 0.0}, {"b": 0.0}])
    matching = torch.tensor([[0.6, 0.3], [0.7, 0.2]])  # each position's top-2
    vocab = StudentVocabulary({}, set(), None)
    ce = float(torch.nn.functional.cross_entropy(logits, targets))
    got = cross_loss(logits, targets, [row], [(matching, row.top.__getitem__)], vocab,
                     _spec("uld"), partial=True)  # fmt: skip
    assert float(got) == pytest.approx(ce, abs=1e-6)
    off = torch.tensor([[0.9, 0.05], [0.7, 0.2]])
    got = cross_loss(logits, targets, [row], [(off, row.top.__getitem__)], vocab,
                     _spec("uld", cross_weight=2.0), partial=True)  # fmt: skip
    assert float(got) == pytest.approx(ce + 2.0 * (0.3 + 0.25) / 2, abs=1e-5)


# -- the task file ------------------------------------------------------------------------


def test_cross_tokenizer_in_the_task_file() -> None:
    spec = TrainSpec.model_validate({"recipe": "kd", "kd": {"cross_tokenizer": "align"}})
    assert spec.kd.cross_tokenizer == "align"
    # unset, it stays out of the model's content address: KD students keep theirs
    assert "cross" not in TrainSpec(recipe="kd").model_dump_json()
    with pytest.raises(ValidationError, match="on_policy is not supported with"):
        TrainSpec.model_validate({"kd": {"cross_tokenizer": "uld", "on_policy": 0.5}})
    with pytest.raises(ValidationError):
        TrainSpec.model_validate({"kd": {"cross_tokenizer": "vocab"}})


def test_the_endpoint_refusal_names_the_option(
    endpoint: Server, odd_student: Path, tmp_path: Path
) -> None:
    from still.pipeline import StageError

    task = write_task(tmp_path, student=f"local:{odd_student}", teacher=endpoint.ref, n=24,
                      heldout=6, labels=None, graders=[{"type": "string_check", "name": "exact"}],
                      generation={"mode": "generate", "max_tokens": 6, "batch_size": 4,
                                  "top_logprobs": 5}, train={"recipe": "kd"})  # fmt: skip
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    export_stage(run, keep="parsed")
    with pytest.raises(StageError, match="train.kd.cross_tokenizer: uld or align"):
        train_stage(run)
