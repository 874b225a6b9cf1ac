"""`still synthesize`: the teacher writes new inputs from the training examples.

Many users have a prompt and a few dozen labelled examples, not thousands of inputs. The
teacher (or `synthesize.model`) is shown a few training inputs and asked for a new one:
for a label task, each request shows inputs of one label and asks for another of that
label, the labels taking turns so the kept inputs are balanced; for free text, requests
differ by the instruction they carry (`synthesize.instructions`, in turn).

Why each step:

- Requests go through the run's store like every completion (tags role=synth, label), so
  a killed synthesis resumes and a rerun calls no model; they are a pure function of the
  seed, the training examples and the request's index, so the same task asks the same
  requests (and a larger `--n` reuses the smaller run's answers as its first ones).
- A teacher writes the same few inputs again and again: exact duplicates (normalised text)
  and near duplicates (Jaccard similarity of character 3-grams at or above
  `synthesize.similarity`) of a kept input or of a training input are dropped.
- An input close to a validation or test input would let the student learn the test:
  those are refused by the same near-duplicate check (text, not ids: a new input has no
  id in common with anything) and counted as leaked.
- Dropped inputs are replaced by further requests, up to `max_requests` times `n`.
- Where every training input is one line (a question, a title), each request stops at the
  end of a line and only an answer's first line is read: a base-model writer continuing a
  list of examples would otherwise write several inputs into one.

Kept inputs go to `<run>/synthetic.jsonl` (the task's input fields, `synthetic: true`,
the label asked for) with the counts in `<run>/synth.json`, and what was dropped, and
why, in `<run>/synth-dropped.jsonl`. With `synthesize.use: true` the run adds them to its
train split (`with_synthetic`) with no reference answer: the teacher answers them like
every training input, and the label asked for is never used as gold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta as jinja2meta

from still.cost import Budget
from still.errors import StillError
from still.graders import answer_of
from still.pipeline._estimate import StageEstimate
from still.pipeline._run import Run, StageError
from still.prices import price_for
from still.tasks import Example, Split, SynthesizeSpec, Task, example_id, render
from still.tokens import counter_for, estimate
from still.types import Completion, Message, Request, SamplingParams

log = logging.getLogger("still.pipeline")

SYNTH_FILE = "synthetic.jsonl"
"""The kept inputs, one JSON object a line, in the run folder."""

SYNTH_STATS = "synth.json"
"""What synthesis asked, got, dropped and kept, in the run folder."""

SYNTH_DROPPED = "synth-dropped.jsonl"
"""Every dropped input with its reason and the closest text it was too near to."""

NGRAM = 3
"""Character n-grams of the near-duplicate check."""

_JINJA = jinja2.Environment(autoescape=False)
"""Parses prompt templates for the fields they read (`_input_fields`); renders nothing."""

DEFAULT_SYSTEM = (
    "You write new inputs for a task, like the examples you are shown. Answer with the "
    "new input alone."
)

DEFAULT_TEMPLATE = """\
{% if description %}Task: {{ description }}
{% endif %}Here are inputs of this task{% if label %} whose answer is "{{ label }}"{% endif %}:
{% for e in examples %}
Example {{ loop.index }}:
{{ e.input }}
{% endfor %}
Write one new input{% if label %} whose answer is "{{ label }}"{% endif %}, unlike any \
example. {{ instruction }}
{% if fields | length > 1 %}Answer with a JSON object with the keys {{ fields | join(", ") }} \
(each a string) and nothing else.{% else %}Answer with the new input alone, without its \
answer.{% endif %}"""


@dataclass
class SynthStats:
    """The counts of one synthesis, as written to synth.json."""

    model: str
    n: int
    seed: int
    similarity: float
    requested: int = 0
    from_store: int = 0
    called: int = 0
    failed: int = 0
    returned: int = 0
    parsed: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    leaked: int = 0  # too close to a validation or test input: refused
    kept: int = 0
    requested_per_label: dict[str, int] = field(default_factory=dict)
    kept_per_label: dict[str, int] = field(default_factory=dict)
    labels_without_examples: list[str] = field(default_factory=list)
    diversity: dict[str, float] = field(default_factory=dict)
    train_diversity: dict[str, float] = field(default_factory=dict)
    # what was asked (the `synthesize:` settings, `n` included, and the writer), as a hash:
    # `still run` synthesizes again when the task's differ (`synthesize_for_run`)
    settings: str = ""
    # `still synthesize --n/--seed` chose other settings than the task's: kept as they are
    by_command: bool = False

    def summary(self) -> str:
        """One line for people."""
        per = ", ".join(f"{k} {v}" for k, v in self.kept_per_label.items() if k)
        return (
            f"kept {self.kept} of {self.n} wanted ({per or 'free text'}); {self.requested} "
            f"requests: {self.from_store} from the store, {self.called} model calls, "
            f"{self.failed} failed; {self.returned - self.parsed} unparseable, "
            f"{self.duplicates} duplicates, {self.near_duplicates} near duplicates, "
            f"{self.leaked} too close to validation/test inputs (refused)"
        )


@dataclass(frozen=True)
class _Ask:
    """One request of the plan: the label it asks for (None: free text) and its index."""

    label: str | None
    index: int

    @property
    def key(self) -> str:
        return f"{self.label or ''}#{self.index}"


# ---------------------------------------------------------------------------- text


def normalise(text: str) -> str:
    """The dedup form of an input: lower case, runs of whitespace as one space.

    >>> normalise("  What IS\\n the  capital? ")
    'what is the capital?'
    """
    return " ".join(text.lower().split())


def ngrams(text: str, n: int = NGRAM) -> frozenset[str]:
    """The character n-grams of normalised `text` (a text shorter than n is one gram)."""
    t = normalise(text)
    if len(t) <= n:
        return frozenset([t])
    return frozenset(t[i : i + n] for i in range(len(t) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NearIndex:
    """Texts indexed for "is any of them at least this similar to a new one?".

    Prefix filtering (Chaudhuri et al. 2006): with every gram set ordered by one global
    order (a hash of the gram), two sets of Jaccard >= t share one of the first
    |s| - ceil(t |s|) + 1 grams of each; only texts sharing such a gram are compared.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._grams: list[frozenset[str]] = []
        self._who: list[str] = []
        self._postings: dict[str, list[int]] = {}

    def _prefix(self, grams: frozenset[str]) -> list[str]:
        ordered = sorted(grams, key=lambda g: hashlib.blake2b(g.encode(), digest_size=8).digest())
        return ordered[: len(grams) - math.ceil(self.threshold * len(grams)) + 1]

    def add(self, text: str, who: str) -> None:
        """Index `text`; `who` is what a match reports (an id, a file line)."""
        grams = ngrams(text)
        i = len(self._grams)
        self._grams.append(grams)
        self._who.append(who)
        for g in self._prefix(grams):
            self._postings.setdefault(g, []).append(i)

    def nearest(self, text: str) -> tuple[str, float] | None:
        """The most similar indexed text at or above the threshold (`who`, similarity)."""
        grams = ngrams(text)
        seen: set[int] = set()
        best: tuple[str, float] | None = None
        for g in self._prefix(grams):
            for i in self._postings.get(g, ()):
                if i in seen:
                    continue
                seen.add(i)
                sim = jaccard(grams, self._grams[i])
                if sim >= self.threshold and (best is None or sim > best[1]):
                    best = (self._who[i], sim)
        return best


def distinct_ngrams(texts: Iterable[str]) -> dict[str, float]:
    """Diversity of texts: distinct word 1- and 2-grams, as counts and as shares of all
    (distinct-n, Li et al. 2016)."""
    out: dict[str, float] = {}
    words = [normalise(t).split() for t in texts]
    for n in (1, 2):
        grams = [tuple(w[i : i + n]) for w in words for i in range(len(w) - n + 1)]
        out[f"distinct_{n}"] = len(set(grams))
        out[f"distinct_{n}_ratio"] = round(len(set(grams)) / len(grams), 4) if grams else 0.0
    return out


def input_text(ex_fields: dict[str, str], names: Sequence[str]) -> str:
    """An input as one text: its one field, or its fields one per line."""
    if len(names) == 1:
        return ex_fields[names[0]]
    return "\n".join(ex_fields[k] for k in names)


# ---------------------------------------------------------------------------- requests


def _spec(task: Task) -> SynthesizeSpec:
    return task.synthesize or SynthesizeSpec()


def is_synthetic(ex: Example) -> bool:
    """Whether an example is a teacher-written input (read from synthetic.jsonl)."""
    return ex.source.startswith(SYNTH_FILE + ":")


def _sources(split: Split) -> list[Example]:
    """The labelled examples a request may show: every non-held-out one (the students'
    train part, few-shot and a trained teacher's part), never validation or test."""
    return [e for e in split.train + split.fewshot + split.teacher if not is_synthetic(e)]


def _input_fields(examples: Sequence[Example], task: Task | None = None) -> list[str]:
    """The fields a new input is made of: those the task's prompts read (a data file's
    other columns, such as TREC's fine-grained label, are no input: writing them would
    show the writer gold and ask it for more), else every field."""
    fields = sorted(examples[0].fields) if examples else []
    if task is None:
        return fields
    read: set[str] = set()
    for spec in task.prompts.values():
        for source in (spec.template, spec.system or ""):
            read |= jinja2meta.find_undeclared_variables(_JINJA.parse(source))
    return [f for f in fields if f in read] or fields


def _quotas(labels: Sequence[str | None], n: int) -> dict[str | None, int]:
    """`n` spread over the labels, the first ones taking the remainder."""
    base, extra = divmod(n, len(labels))
    return {lab: base + (i < extra) for i, lab in enumerate(labels)}


class _Planner:
    """Builds the request of each (label, index): its examples and instruction are drawn
    by a generator seeded with (seed, label, index), so request k is the same whatever
    `n` is and whatever came before it."""

    def __init__(self, task: Task, split: Split, model: str) -> None:
        self.task, self.spec, self.model = task, _spec(task), model
        sources = _sources(split)
        if not sources:
            raise StageError("synthesize: no training examples to show the teacher")
        if any(e.messages is not None for e in sources):
            raise StageError(
                "synthesize: a `store:` source's examples are recorded conversations; "
                "teacher-written inputs need a data file's fields"
            )
        self.fields = _input_fields(sources, task)
        # one-line inputs (questions, titles): a new one ends at its line's end, so the
        # writer stops there (a base model would go on writing a list) and only the first
        # line of an answer is read
        self.one_line = len(self.fields) == 1 and all(
            "\n" not in e.fields[self.fields[0]].strip() for e in sources
        )
        self.by_label: dict[str | None, list[Example]] = {}
        if task.labels:
            for lab in task.labels:
                pool = [e for e in sources if e.answer == lab]
                if pool:
                    self.by_label[lab] = sorted(pool, key=lambda e: e.id)
        else:
            self.by_label[None] = sorted(sources, key=lambda e: e.id)
        self.missing = [lab for lab in task.labels or [] if lab not in self.by_label]

    @property
    def labels(self) -> list[str | None]:
        return list(self.by_label)

    def request(self, ask: _Ask) -> Request:
        spec = self.spec
        rng = random.Random(f"{spec.seed}:{ask.label}:{ask.index}")
        pool = self.by_label[ask.label]
        shown = rng.sample(pool, min(spec.examples_per_prompt, len(pool)))
        instruction = spec.instructions[ask.index % len(spec.instructions)]
        ctx: dict[str, Any] = {
            "examples": [{**e.fields, "input": self._shown(e.fields)} for e in shown],
            "label": ask.label,
            "labels": list(self.task.labels or []),
            "instruction": instruction,
            "description": self.task.description,
            "fields": self.fields,
        }
        msgs = []
        system = spec.system if spec.system is not None else DEFAULT_SYSTEM
        if system:
            msgs.append(
                Message(role="system", content=render(system, ctx, name="synthesize.system"))
            )
        template = spec.template or DEFAULT_TEMPLATE
        msgs.append(Message(role="user", content=render(template, ctx, name="synthesize.template")))
        seed = int(hashlib.sha256(f"{spec.seed}:{ask.key}".encode()).hexdigest()[:8], 16)
        return Request(
            model=self.model,
            messages=tuple(msgs),
            params=SamplingParams(
                temperature=spec.temperature,
                max_tokens=spec.max_tokens,
                seed=seed,
                stop=("\n",) if self.one_line else (),
            ),
        )

    def _shown(self, fields: dict[str, str]) -> str:
        if len(self.fields) == 1:
            return fields[self.fields[0]]
        return json.dumps({k: fields[k] for k in self.fields}, ensure_ascii=False)

    def parse(self, text: str) -> dict[str, str] | None:
        """The new input's fields from the writer's answer (None: not usable)."""
        text = re.sub(r"^```\w*\s*|\s*```$", "", text.strip())
        if len(self.fields) == 1:
            if self.one_line:  # a writer that ignored the stop: its first line
                text = next((line for line in text.splitlines() if line.strip()), "")
            text = re.sub(r"^(new input|input|example\s*\d*)\s*:\s*", "", text, flags=re.I)
            text = text.strip()
            if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
                text = text[1:-1].strip()
            return {self.fields[0]: text} if text else None
        start, end = text.find("{"), text.rfind("}")
        try:
            obj = json.loads(text[start : end + 1]) if start >= 0 else None
        except json.JSONDecodeError:
            return None
        if not isinstance(obj, dict) or any(not isinstance(obj.get(k), str) for k in self.fields):
            return None
        out = {k: obj[k].strip() for k in self.fields}
        return out if any(out.values()) else None


# ---------------------------------------------------------------------------- stage


def synthetic_file(run: Run) -> Path:
    """Where a run's kept synthetic inputs are."""
    return run.dir / SYNTH_FILE


def synthesize_stage(
    run: Run, n: int | None = None, budget: Budget | None = None, seed: int | None = None
) -> SynthStats:
    """Stage: have the teacher (or `synthesize.model`) write `n` new inputs (default
    `synthesize.n`), kept when new and far enough from every validation and test input;
    writes synthetic.jsonl, synth.json and synth-dropped.jsonl. With `synthesize.use`, the
    run's train split then holds them (`with_synthetic`).

    Raises:
        StageError: no training example to show, or a `store:` source.
        BudgetExceeded: `budget` ran out; what was answered is stored (rerun to go on).
    """
    spec = _spec(run.task)
    if seed is not None:
        spec = spec.model_copy(update={"seed": seed})
    task = run.task.model_copy(update={"synthesize": spec})
    by_command = n is not None or seed is not None
    n = n or spec.n
    model = spec.model or run.task.models.teacher
    plan = _Planner(task, run.split, model)
    if plan.missing:
        log.warning(
            "synthesize: no training example of %s: no input of %s asked for",
            ", ".join(plan.missing),
            "it" if len(plan.missing) == 1 else "them",
        )
    names = plan.fields
    stats = SynthStats(model=model, n=n, seed=spec.seed, similarity=spec.similarity)
    stats.settings = _settings(spec.model_copy(update={"n": n}), model)
    stats.by_command = by_command
    stats.labels_without_examples = list(plan.missing)
    known = NearIndex(spec.similarity)  # training inputs, then each kept new one
    exact: dict[str, str] = {}
    for e in _sources(run.split):
        text = input_text(e.fields, names)
        known.add(text, e.source)
        exact.setdefault(normalise(text), e.source)
    held = NearIndex(spec.similarity)
    held_exact: dict[str, str] = {}
    for e in run.split.validation + run.split.heldout:
        text = input_text(e.fields, names)
        held.add(text, e.source)
        held_exact.setdefault(normalise(text), e.source)
    quotas = _quotas(plan.labels, n)
    caps = {lab: math.ceil(q * spec.max_requests) for lab, q in quotas.items()}
    asked = dict.fromkeys(plan.labels, 0)
    kept: dict[str | None, int] = dict.fromkeys(plan.labels, 0)
    rows: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    while True:
        todo: list[_Ask] = []
        for lab in plan.labels:
            take = min(quotas[lab] - kept[lab], caps[lab] - asked[lab])
            todo += [_Ask(lab, asked[lab] + i) for i in range(max(take, 0))]
            asked[lab] += max(take, 0)
        if not todo:
            break
        answers = _ask(run, plan, todo, budget, stats)
        for ask in todo:
            comp = answers.get(ask.key)
            if comp is None or comp.error:
                continue
            stats.returned += 1
            fields = plan.parse(comp.text)
            if fields is None:
                dropped.append({"label": ask.label, "text": comp.text, "reason": "unparseable"})
                continue
            stats.parsed += 1
            text = input_text(fields, names)
            key = normalise(text)
            reason, near = _verdict(key, text, held_exact, held, exact, known)
            if reason is not None:
                if reason == "leaked":
                    stats.leaked += 1
                elif reason == "duplicate":
                    stats.duplicates += 1
                else:
                    stats.near_duplicates += 1
                dropped.append(
                    {
                        "label": ask.label,
                        "text": text,
                        "reason": reason,
                        "near": near[0],
                        "similarity": round(near[1], 4),
                    }
                )
                continue
            where = f"{SYNTH_FILE}:{len(rows) + 1}"
            known.add(text, where)
            exact[key] = where
            kept[ask.label] += 1
            rows.append(
                {
                    **fields,
                    "synthetic": True,
                    "asked_label": ask.label,
                    "request_hash": comp.request_hash,
                }
            )
    stats.requested = sum(asked.values())
    stats.requested_per_label = {str(k or ""): v for k, v in asked.items()}
    stats.kept = len(rows)
    stats.kept_per_label = {str(k or ""): v for k, v in kept.items()}
    stats.diversity = distinct_ngrams(input_text(r, names) for r in rows)
    real = [e for e in run.split.train if not is_synthetic(e)]
    stats.train_diversity = distinct_ngrams(input_text(e.fields, names) for e in real)
    _write_jsonl(run.dir / SYNTH_FILE, rows)
    _write_jsonl(run.dir / SYNTH_DROPPED, dropped)
    (run.dir / SYNTH_STATS).write_text(json.dumps(stats.__dict__, indent=2) + "\n")
    if stats.kept < n:
        log.warning(
            "synthesize: kept %d of %d (%d requests, the most synthesize.max_requests=%s "
            "allows); raise it, or lower synthesize.similarity",
            stats.kept, n, stats.requested, spec.max_requests,
        )  # fmt: skip
    if run.task.synthesize is not None and run.task.synthesize.use:
        run.split = with_synthetic(run.task, run.split, run.dir)
    return stats


def _verdict(
    key: str,
    text: str,
    held_exact: dict[str, str],
    held: NearIndex,
    exact: dict[str, str],
    known: NearIndex,
) -> tuple[str | None, tuple[str, float]]:
    """Why a new input is dropped (None: kept), with what it is too close to. Held-out
    inputs are checked first: an input both leaked and duplicated counts as leaked."""
    if key in held_exact:
        return "leaked", (held_exact[key], 1.0)
    near = held.nearest(text)
    if near is not None:
        return "leaked", near
    if key in exact:
        return "duplicate", (exact[key], 1.0)
    near = known.nearest(text)
    if near is not None:
        return "near duplicate", near
    return None, ("", 0.0)


def _ask(
    run: Run, plan: _Planner, todo: Sequence[_Ask], budget: Budget | None, stats: SynthStats
) -> dict[str, Completion]:
    """Send one round's requests through the run's store, one capture per label (its tag)."""
    out: dict[str, Completion] = {}
    for lab in plan.labels:
        reqs = {a.key: plan.request(a) for a in todo if a.label == lab}
        if not reqs:
            continue
        tags = {"role": "synth", "label": lab or ""}
        got = run.capture(plan.model, reqs, tags, f"synthesize {lab or 'inputs'}", budget)
        stats.from_store += got.from_store
        stats.called += got.called
        stats.failed += got.failed
        out.update(got.completions)
    return out


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(path)


# ---------------------------------------------------------------------------- use


def synthetic_examples(task: Task, run_dir: Path) -> list[Example]:
    """The kept synthetic inputs of a run folder as training examples: no reference answer
    (the label asked for is not gold), source `synthetic.jsonl:<line>`; none when the file
    is missing."""
    path = run_dir / SYNTH_FILE
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            fields = {k: v for k, v in row.items() if isinstance(v, str) and k != "asked_label"}
            fields.pop("request_hash", None)
        except (json.JSONDecodeError, AttributeError) as exc:
            raise StillError(
                f"{path}:{n}: not a JSON object ({exc}); rerun `still synthesize`"
            ) from exc
        ex_id = example_id({**fields, "synthetic": "true"})
        out.append(Example(id=ex_id, fields=fields, answer="", source=f"{SYNTH_FILE}:{n}"))
    return out


def with_synthetic(task: Task, split: Split, run_dir: Path) -> Split:
    """The split with the run's synthetic inputs added to its train part, when the task
    says `synthesize.use: true` (otherwise, or with none synthesized, as it is). Never to
    validation, test, few-shot or a trained teacher's part."""
    if task.synthesize is None or not task.synthesize.use:
        return split
    real = [e for e in split.train if not is_synthetic(e)]
    # checked again here, not assumed: the split may have changed since synthesis
    held = {_flat(e) for e in split.validation + split.heldout}
    synth = [e for e in synthetic_examples(task, run_dir) if _flat(e) not in held]
    return replace(split, train=real + synth)


def _flat(ex: Example) -> str:
    return normalise(" ".join(v for _, v in sorted(ex.fields.items())))


def _settings(spec: SynthesizeSpec, model: str) -> str:
    """A hash of what a synthesis asks for: its settings (`n` included) and its writer."""
    text = json.dumps([spec.model_dump(mode="json"), model], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _current(run: Run, spec: SynthesizeSpec) -> bool:
    """Whether the run folder's synthetic inputs are the task's: written by `still
    synthesize` with settings of its own (kept as they are), or with the task's as they
    now are."""
    path = run.dir / SYNTH_STATS
    if not synthetic_file(run).is_file() or not path.is_file():
        return False
    done = json.loads(path.read_text())
    model = spec.model or run.task.models.teacher
    return bool(done.get("by_command")) or done.get("settings") == _settings(spec, model)


def synthesize_for_run(run: Run, budget: Budget | None = None) -> SynthStats | None:
    """`still run`'s step: with `synthesize.use`, synthesize (`synthesize.n` inputs) so the
    teacher answers them with the train split, unless the run folder's synthetic inputs
    are already the task's (`_current`). A task whose `synthesize:` changed (a larger `n`)
    is synthesized again, resuming through the store: what was asked before is not asked
    again. None when nothing was done."""
    spec = run.task.synthesize
    if spec is None or not spec.use or _current(run, spec):
        return None
    stats = synthesize_stage(run, budget=budget)
    log.info("synthesize: %s", stats.summary())
    return stats


# ---------------------------------------------------------------------------- report


def synthesis_report(run: Run) -> dict[str, Any] | None:
    """For the report: what synthesis asked, kept and dropped (synth.json); the diversity
    of the kept inputs beside the real training inputs' and beside that of as many
    synthetic inputs as there are real ones (distinct-n shares fall as text grows, so only
    equal sizes compare); and per label asked, the teacher's stored answers to the inputs
    kept (does the teacher agree with the label asked for, and the labels' balance).
    None when the run synthesized nothing. Reads the store only."""
    path = run.dir / SYNTH_STATS
    if not path.is_file():
        return None
    try:
        stats: dict[str, Any] = json.loads(path.read_text())
    except ValueError:
        log.warning("%s is not valid JSON: left out of the report", path)
        return None
    examples = synthetic_examples(run.task, run.dir)  # raises on a malformed line
    lines = synthetic_file(run).read_text().splitlines() if examples else []
    asked = [str(json.loads(x).get("asked_label") or "") for x in lines if x.strip()]
    real = [e for e in run.split.train if not is_synthetic(e)]
    names = _input_fields(real, run.task) or _input_fields(examples, run.task)
    k = len(real)
    same_size = distinct_ngrams(input_text(e.fields, names) for e in examples[:k])
    labels = run.task.labels
    answers = run.stored("teacher", "train") if (labels and examples) else {}
    per_label: dict[str, dict[str, int]] = {}
    teacher_labels: dict[str, int] = {}
    for label, ex in zip(asked, examples, strict=True):
        counts = per_label.setdefault(label, {"kept": 0, "agrees": 0, "other": 0, "none": 0})
        counts["kept"] += 1
        if not labels:
            continue
        answer, _ = answer_of(answers.get(ex.id), labels)
        counts["agrees" if answer == label else "none" if answer is None else "other"] += 1
        if answer is not None:
            teacher_labels[answer] = teacher_labels.get(answer, 0) + 1
    return {
        **stats,
        "real_inputs": k,
        "diversity_same_size": same_size if k and len(examples) >= k else {},
        "per_label": per_label,
        "teacher_labels": teacher_labels,
        "real_labels": {lab: sum(e.answer == lab for e in real) for lab in labels or []},
    }


# ---------------------------------------------------------------------------- estimate


def estimate_synthesis(run: Run, n: int | None = None) -> StageEstimate:
    """`still estimate`'s line for synthesis: every request it may send (up to
    `max_requests` times `n`), counted like the run's captures; stored ones are free."""
    spec = _spec(run.task)
    n = n or spec.n
    model = spec.model or run.task.models.teacher
    plan = _Planner(run.task, run.split, model)
    quotas = _quotas(plan.labels, n)
    counter = counter_for(model, run.task.tokenizers)
    requests = stored = prompt = output = 0
    for lab, q in quotas.items():
        for i in range(math.ceil(q * spec.max_requests)):
            req = plan.request(_Ask(lab, i))
            requests += 1
            if run.store.lookup(req.key()) is not None:
                stored += 1
                continue
            est = estimate(counter, req)
            prompt += est.prompt
            output += est.output_max
    price = price_for(model, run.task.prices)
    return StageEstimate(
        role="synth",
        split="train",
        model=model,
        tokenizer=counter.name,
        exact=counter.exact,
        requests=requests,
        stored=stored,
        prompt_tokens=prompt,
        output_tokens_max=output,
        input_cost=None if price is None else price.cost(prompt, 0),
        output_cost_max=None if price is None else price.cost(0, output),
    )
