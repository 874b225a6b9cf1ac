"""Direct preference optimisation (DPO) of the student, as one recipe readable top to bottom.

setup -> read pairs -> train (TRL's DPOTrainer, LoRA) -> merge -> save.

DPO raises the likelihood of the chosen answer over the rejected one, relative to the
model it starts from (the reference), with `beta` limiting how far it may drift. With
LoRA, the reference is the same model with its adapter switched off, so no second copy of
the weights is held in memory. The saved directory is a plain transformers model (LoRA
merged in), loaded by every provider like any other model.

The pairs come from `still.preference` in TRL's conversational format; the tokenizer's
chat template renders them, as it renders the student's prompts at inference.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from still.tasks import TrainSpec


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """TRL conversational preference rows; a malformed line raises ValueError naming file
    and line (a trainer fed a bad row fails much later, with a far less clear error)."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            for key in ("prompt", "chosen", "rejected"):
                if not isinstance(row[key], list) or not row[key]:
                    raise ValueError(f"{key!r} must be a non-empty list of messages")
            for key in ("chosen", "rejected"):
                if row[key][-1]["role"] != "assistant":
                    raise ValueError(f"{key!r} must end with the assistant's answer")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{n}: not a TRL preference row ({exc})") from exc
        rows.append({k: row[k] for k in ("prompt", "chosen", "rejected")})
    return rows


def train_dpo(
    base_model: Path,
    data: Path,
    out_dir: Path,
    *,
    beta: float = 0.1,
    learning_rate: float = 5e-6,
    max_steps: int | None = None,
    lora_r: int = 8,
    epochs: float = 1.0,
    batch_size: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """DPO-train `base_model` on the preference pairs in `data`; save the merged model.

    Args:
        base_model: a transformers model directory (usually the SFT student, since DPO
            refines a model that already answers in the right format).
        data: JSONL in TRL's conversational preference format (`still.preference`).
        out_dir: where the merged model, its tokenizer and `train.json` go (atomically).
        beta: strength of the pull back toward the reference model (higher: stay closer).
        learning_rate: DPO wants far smaller steps than SFT; 5e-6 is TRL's usual scale.
        max_steps: stop after this many optimizer steps (default: `epochs` over the data).
        lora_r: LoRA rank (alpha is twice the rank, as in the SFT recipe's defaults).
        epochs, batch_size, seed: the usual.

    Returns:
        {"steps", "losses" (one per step), "seconds", "examples", "out_dir"}.

    Raises:
        ValueError: no pairs in `data` (a run that trains on nothing must not succeed).
        FloatingPointError: the loss became NaN or infinite (nothing is saved: a broken
            model must not replace a good one).
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # from the submodules: `trl` itself is a lazy module whose names mypy cannot see
    from trl.trainer.dpo_config import DPOConfig
    from trl.trainer.dpo_trainer import DPOTrainer

    # -- setup ---------------------------------------------------------------------------
    rows = read_pairs(data)
    if not rows:
        raise ValueError(f"{data}: no preference pairs to train on")
    tokenizer: Any = AutoTokenizer.from_pretrained(base_model)
    auto: Any = AutoModelForCausalLM  # its stubs mistype from_pretrained's first argument
    model: Any = auto.from_pretrained(base_model, dtype=torch.float32)
    on_gpu = torch.cuda.is_available()

    # -- train ---------------------------------------------------------------------------
    # TRL's defaults are for GPUs: bf16 and activation (gradient) checkpointing both slow
    # (or break) a CPU run, and a small student fits without them. transformers 5 renamed
    # gradient_checkpointing to activation_checkpointing and warns on the old name, which
    # TRL's own default (True) would otherwise set.
    no_checkpointing: dict[str, Any]
    if hasattr(DPOConfig, "activation_checkpointing"):
        no_checkpointing = {"activation_checkpointing": False}
    else:
        no_checkpointing = {"gradient_checkpointing": False}
    with tempfile.TemporaryDirectory(prefix="still-dpo-") as scratch:
        config = DPOConfig(
            output_dir=scratch,  # nothing is saved there (save_strategy "no")
            beta=beta,
            learning_rate=learning_rate,
            max_steps=max_steps if max_steps is not None else -1,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            seed=seed,
            bf16=False,
            use_cpu=not on_gpu,
            logging_steps=1,  # a loss per step, read back from the log history
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            **no_checkpointing,
        )
        lora = LoraConfig(
            r=lora_r,
            lora_alpha=2 * lora_r,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        trainer = DPOTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora,  # no ref_model: the reference is the adapter switched off
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    result: dict[str, Any] = {
        "out_dir": str(out_dir),
        "method": "lora",
        "recipe": "dpo",
        "examples": len(rows),
        "steps": int(trainer.state.global_step),
        "losses": losses,
        "seconds": seconds,
        "beta": beta,
        "learning_rate": learning_rate,
    }
    if not all(math.isfinite(x) for x in losses):
        raise FloatingPointError(f"DPO loss diverged: {losses}")

    # -- save ----------------------------------------------------------------------------
    peft_model: Any = trainer.model  # a PeftModel: peft_config was given
    merged: Any = peft_model.merge_and_unload()
    merged.eval()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "train.json").write_text(json.dumps(result, indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return result


def train_dpo_spec(
    base_model: Path,
    data: Path,
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """`train_dpo` driven by the task's training config (train.recipe: dpo), as the other
    recipes are: epochs, batch size, LoRA rank and seed from `spec`, beta and the (much
    smaller) learning rate from `spec.dpo`. Progress is TRL's own; `on_step` is unused."""
    return train_dpo(
        base_model,
        data,
        out_dir,
        beta=spec.dpo.beta,
        learning_rate=spec.dpo.learning_rate,
        lora_r=spec.lora_r,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        seed=spec.seed,
    )
