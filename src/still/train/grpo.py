"""Reinforcement fine-tuning (GRPO) of the student on the task's own graders.

No teacher answer is learned here: for each training prompt the student samples a group
of answers, the task's graders score every one (python graders in their sandbox, judges
through the run's store, `multi` combined as it always is), and TRL's GRPOTrainer pushes
each answer up or down by its score against its group's mean, with a KL pull back toward
the starting model (`train.grpo.kl_weight`). This is the reinforcement fine-tuning the
hosted platforms run against the same OpenAI-style graders.

The student is loaded by the shared setup (LoRA, full or QLoRA: `train.method`), prompts
are rendered as the local provider renders them, and those whose prompt plus
`max_completion_length` exceeds `train.max_length` are left out and counted, as every
recipe does. Every `eval_every` steps (and before the first and after the last) the
student answers the first `eval_examples` validation prompts greedily, the same reward
grades them, and the mean is written to grpo-eval.jsonl beside the model with every
step's mean training reward; the weights saved are the best evaluation's (the
"evaluations on checkpoints" hosted RFT shows), the starting model included.

The train stage writes the data (`write_prompts`) and builds the reward from the task's
graders (`grader_reward`); a test or a plugin may pass any `Reward`.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from still.errors import TrainError
from still.graders import Capture, Grader, grade, prepare_graders
from still.models import prompt_token_ids, render_prompt
from still.tasks import Example, TrainSpec
from still.train._common import Student, TrainResult, build_model, save, total_steps
from still.train._parallel import resolve_precision
from still.types import Completion, Message, Request

log = logging.getLogger("still.train")

EVAL_FILE = "grpo-eval.jsonl"
"""Beside the model: each step's mean training reward and each validation evaluation."""


@dataclass(frozen=True)
class PromptRow:
    """One prompt the student answers: the example it asks, rendered for the student.

    Attributes:
        id: the example's id.
        split: "train" (sampled in groups and learned from) or "validation" (evaluated).
        messages: the student's prompt.
        fields: the example's fields, which graders read as `item.<field>`.
        answer: the reference answer (`item.answer`).
    """

    id: str
    split: str
    messages: tuple[Message, ...]
    fields: dict[str, str]
    answer: str


Reward = Callable[[Sequence[PromptRow], Sequence[str]], list[float]]
"""`reward(rows, answers)`: one score per (prompt, sampled answer) pair, in order."""


def write_prompts(path: Path, rows: Sequence[PromptRow]) -> None:
    """Write `rows` as JSONL (atomically: the file is the data a model's address hashes)."""
    text = "".join(
        json.dumps(
            {
                "id": r.id,
                "split": r.split,
                "messages": [m.model_dump() for m in r.messages],
                "fields": r.fields,
                "answer": r.answer,
            },
            ensure_ascii=False,
        )
        + "\n"
        for r in rows
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def read_prompts(path: Path) -> list[PromptRow]:
    """The rows `write_prompts` wrote; a malformed line raises TrainError naming it."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            row = PromptRow(
                id=str(raw["id"]),
                split=raw["split"],
                messages=tuple(Message.model_validate(m) for m in raw["messages"]),
                fields={str(k): str(v) for k, v in raw["fields"].items()},
                answer=str(raw["answer"]),
            )
            if row.split not in ("train", "validation") or not row.messages:
                raise ValueError(row.split)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TrainError(
                f"{path}:{n}: expected a prompt row (id, split, messages, fields, answer): {exc}"
            ) from exc
        rows.append(row)
    return rows


def grader_reward(
    graders: Sequence[Grader],
    labels: Sequence[str] | None,
    json_schema: dict[str, Any] | None,
    capture: Capture | None,
) -> Reward:
    """The task's graders as a reward: each answer is graded as the pipeline grades a
    completion (parsed against the labels or the JSON schema; an unparseable one scores
    0), judges asked and python graders run in one batch per call (`prepare_graders`),
    and the reward is the mean of the top-level graders' scores (a `multi` grader is one,
    its formula already combining its parts)."""
    if not graders:
        raise TrainError("train.recipe: grpo needs graders: the reward is their score")

    def reward(rows: Sequence[PromptRow], answers: Sequence[str]) -> list[float]:
        pairs: list[tuple[Example, Completion | None]] = [
            (
                Example(id=r.id, fields=r.fields, answer=r.answer, source="grpo"),
                Completion(
                    request=Request(model="grpo", messages=r.messages, json_schema=json_schema),
                    text=text,
                ),
            )
            for r, text in zip(rows, answers, strict=True)
        ]
        prepare_graders(graders, pairs, labels, capture)
        scores = []
        for example, completion in pairs:
            grades = grade(graders, example, completion, labels)
            scores.append(sum(g.score for g in grades) / len(grades))
        return scores

    return reward


def _answer_text(completion: Any) -> str:
    """A TRL completion's text: a string, or (conversational) the assistant's message."""
    if isinstance(completion, str):
        return completion
    return str(completion[-1]["content"])


def _is_chat(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def generate_greedy(
    model: Any, tokenizer: Any, rows: Sequence[PromptRow], max_new_tokens: int, batch_size: int
) -> list[str]:
    """The model's greedy answer to each row's prompt (rendered as at inference)."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    try:
        for i in range(0, len(rows), batch_size):
            texts = [render_prompt(tokenizer, r.messages) for r in rows[i : i + batch_size]]
            enc = tokenizer(
                texts, return_tensors="pt", padding=True, add_special_tokens=not _is_chat(tokenizer)
            ).to(device)
            with torch.no_grad():
                ids = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
                )
            new = ids[:, enc["input_ids"].shape[1] :]
            out += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return out


class _Evaluations:
    """The validation evaluations and training rewards of one GRPO run, and the best
    evaluation's trainable weights (kept on the CPU until the end)."""

    def __init__(
        self, rows: Sequence[PromptRow], reward: Reward, spec: TrainSpec, tokenizer: Any
    ) -> None:
        self.rows, self.reward, self.spec, self.tokenizer = rows, reward, spec, tokenizer
        self.records: list[dict[str, Any]] = []
        self.best: tuple[float, int] | None = None  # (mean reward, step)
        self.best_weights: dict[str, Any] = {}

    def evaluate(self, model: Any, step: int) -> None:
        if not self.rows:
            return
        answers = generate_greedy(
            model, self.tokenizer, self.rows, self.spec.grpo.max_completion_length,
            max(1, self.spec.batch_size * 2),
        )  # fmt: skip
        scores = self.reward(self.rows, answers)
        mean = sum(scores) / len(scores)
        self.records.append(
            {"step": step, "split": "validation", "reward": mean, "examples": len(scores)}
        )
        log.info("grpo: step %d, mean validation reward %.4f", step, mean)
        if self.best is None or mean >= self.best[0]:  # ties: the later, more trained one
            self.best = (mean, step)
            self.best_weights = {
                n: p.detach().to("cpu", copy=True)
                for n, p in model.named_parameters()
                if p.requires_grad
            }

    def restore_best(self, model: Any, last_step: int) -> None:
        """Put the best evaluation's weights back when it was not the last step's."""
        import torch

        if self.best is None or self.best[1] == last_step:
            return
        log.info("grpo: keeping step %d's weights (best validation reward)", self.best[1])
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.best_weights.items():
                params[name].copy_(value)

    def write(self, path: Path) -> None:
        best_step = None if self.best is None else self.best[1]
        for r in self.records:
            if r["split"] == "validation":
                r["best"] = r["step"] == best_step
        path.write_text("".join(json.dumps(r) + "\n" for r in self.records))


def run_grpo(
    base_model: Path,
    rows: Sequence[PromptRow],
    reward: Reward,
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, int, float], None] | None = None,
    *,
    data: Path | None = None,
) -> TrainResult:
    """GRPO-train `base_model` on the train rows of `rows`, rewarded by `reward`,
    evaluating on the validation rows; save the best evaluation's merged model and
    grpo-eval.jsonl in `out_dir`.

    Raises:
        TrainError: no training prompt fits `train.max_length`.
    """
    import torch
    from transformers import AutoTokenizer, TrainerCallback
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    g = spec.grpo
    if spec.processes and spec.processes > 1:
        log.warning("grpo trains in one process; train.processes=%d is ignored", spec.processes)
    random.seed(spec.seed)
    torch.manual_seed(spec.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(spec.precision, device)
    tokenizer: Any = AutoTokenizer.from_pretrained(base_model)
    chat = _is_chat(tokenizer)

    def fits(r: PromptRow) -> bool:
        prompt = prompt_token_ids(tokenizer, render_prompt(tokenizer, r.messages))
        return len(prompt) + g.max_completion_length <= spec.max_length

    train = [r for r in rows if r.split == "train"]
    kept = [r for r in train if fits(r)]
    if not kept:
        where = f"{data}: " if data else ""
        raise TrainError(
            f"{where}no training prompt fits train.max_length={spec.max_length} with "
            f"train.grpo.max_completion_length={g.max_completion_length}"
        )
    validation = [r for r in rows if r.split == "validation" and fits(r)][: g.eval_examples]
    model = build_model(base_model, spec, device, precision)
    total = total_steps(len(kept), spec)

    from datasets import Dataset

    dataset = Dataset.from_list(
        [
            {
                "prompt": [m.model_dump() for m in r.messages]
                if chat
                else render_prompt(tokenizer, r.messages),
                "row": i,
            }
            for i, r in enumerate(kept)
        ]
    )

    def graders(
        prompts: list[Any], completions: list[Any], row: list[int], **_: Any
    ) -> list[float | None]:
        return list(reward([kept[i] for i in row], [_answer_text(c) for c in completions]))

    evals = _Evaluations(validation, reward, spec, tokenizer)
    losses: list[float] = []
    tokens = [0]

    class Progress(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            evals.evaluate(kw["model"], 0)

        def on_log(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            logs = kw.get("logs") or {}
            if "reward" not in logs:
                return
            step = state.global_step
            loss = float(logs.get("loss", 0.0))
            losses.append(loss)
            tokens[0] = int(logs.get("num_tokens", tokens[0]))
            evals.records.append({"step": step, "split": "train", "reward": logs["reward"]})
            if on_step:
                on_step(step, total, loss)
            if g.eval_every and step % g.eval_every == 0 and step < total:
                evals.evaluate(kw["model"], step)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="still-grpo-") as scratch:
        config = GRPOConfig(
            output_dir=scratch,
            use_cpu=device == "cpu",
            bf16=precision == "bf16",
            gradient_checkpointing=False,  # as every recipe: speed over memory
            report_to=[],
            disable_tqdm=True,
            save_strategy="no",
            logging_steps=1,
            seed=spec.seed,
            max_steps=total,
            per_device_train_batch_size=spec.batch_size * g.group_size,
            num_generations=g.group_size,
            max_completion_length=g.max_completion_length,
            temperature=g.temperature,
            learning_rate=g.learning_rate,
            beta=g.kl_weight,
            warmup_steps=max(1, total // 10),  # as every recipe: 10% linear warm-up
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=graders,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[Progress()],
        )
        trainer.train()
        trained = trainer.model
    evals.evaluate(trained, total)
    seconds = time.perf_counter() - started
    evals.restore_best(trained, total)
    result = TrainResult(
        str(out_dir), spec.method, len(kept), total, spec.epochs, seconds,
        tokens[0] / seconds if seconds else 0.0, losses=losses,
        skipped_too_long=len(train) - len(kept), recipe="grpo", tokens=tokens[0],
        precision=precision,
    )  # fmt: skip
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    student = Student(
        trained, tokenizer, device, pad, spec.method != "full", Path(base_model), precision,
        None, random.Random(spec.seed),
    )  # fmt: skip
    save(student, trained, out_dir, result)
    evals.write(out_dir / EVAL_FILE)
    return result


def train_grpo(
    base_model: Path,
    data: Path,
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, int, float], None] | None = None,
    reward: Reward | None = None,
) -> TrainResult:
    """The `grpo` recipe: GRPO-train `base_model` on the prompts in `data` (`write_prompts`),
    rewarded by `reward` (the train stage passes the task's graders, `grader_reward`).

    Raises:
        TrainError: no reward given, no training prompt in `data`, or none that fits.
    """
    if reward is None:
        raise TrainError(
            "train.recipe: grpo needs a reward: train through `still train` or `still run`, "
            "which reward with the task's graders"
        )
    rows = read_prompts(data)
    if not any(r.split == "train" for r in rows):
        raise TrainError(f"{data}: no training prompts")
    return run_grpo(base_model, rows, reward, out_dir, spec, on_step, data=data)
