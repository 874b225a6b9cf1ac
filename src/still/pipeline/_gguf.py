"""`still export-gguf`: the distilled student as GGUF files, each read back and compared.

Everything is keyed by content, as every stage is: a GGUF file is read back under a
model reference named by the file's hash (so the store never answers a new file's
questions with an old file's answers), and an f16 file is reused for Q4_K_M only when it
was converted from the same merged model (the content-addressed `distilled-<hash>`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from still.pipeline._run import Run, StageError, capture_role

log = logging.getLogger("still.pipeline")


def _digest(path: Path) -> str:
    """A file's sha256, read in blocks (GGUF files are hundreds of megabytes)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _f16_for(model_dir: Path, f16: Path) -> Path:
    """The f16 file of this merged model: reused only when its sidecar names the same
    model folder, converted (again) otherwise."""
    sidecar = f16.with_name(f16.name + ".json")
    try:
        source = json.loads(sidecar.read_text()).get("source")
    except (OSError, ValueError):
        source = None
    if f16.is_file() and source == model_dir.name:
        return f16
    from still import gguf

    gguf.convert(model_dir, f16, "f16")
    sidecar.write_text(json.dumps({"source": model_dir.name}))
    return f16


def export_gguf_stage(
    run: Run, quants: tuple[str, ...] = ("f16", "q4_k_m"), verify: int | None = None
) -> dict[str, Any]:
    """Stage (`still export-gguf`): the distilled student as GGUF files plus an Ollama
    Modelfile in `<run>/gguf/`, each file read back and asked the first `verify` held-out
    questions (all by default) to measure its agreement with the merged model. A quant
    whose tool is missing is skipped with the reason (in the result and gguf.json)."""
    from still import gguf
    from still.bench import evaluate

    unknown = set(quants) - set(gguf.QUANTS)
    if unknown:
        raise StageError(f"unknown quantization {sorted(unknown)}; choose from {gguf.QUANTS}")
    merged = run.model_for("distilled")  # StageError when not trained yet
    model_dir = Path(merged.removeprefix("local:"))
    out = run.dir / "gguf"
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for q in quants:
        target = out / f"model-{q}.gguf"
        try:
            if q == "q4_k_m":
                files[q] = gguf.quantize(_f16_for(model_dir, out / "model-f16.gguf"), target,
                                         "Q4_K_M")  # fmt: skip
            elif q == "f16":
                files[q] = _f16_for(model_dir, target)
            else:
                files[q] = gguf.convert(model_dir, target, q)
        except gguf.ToolMissing as exc:
            if q != "q4_k_m":
                raise StageError(str(exc)) from exc
            skipped[q] = str(exc)
            log.warning("%s skipped: %s", q, exc)
        except RuntimeError as exc:
            raise StageError(str(exc)) from exc
    heldout = run.split.heldout[:verify]
    reference = capture_role(run, "distilled", "heldout", limit=verify).completions
    report: dict[str, Any] = {"merged_model": merged, "examples": len(heldout), "files": {},
                              "skipped": skipped}  # fmt: skip
    for q, path in files.items():
        digest = _digest(path)
        back = gguf.load_gguf(path, out / f".{q}-{digest[:12]}-readback")
        ref = f"local:{back.resolve()}"
        got = capture_role(run, "distilled", "heldout", limit=verify, model=ref)
        same = sum(
            got.completions[e.id].text == reference[e.id].text
            for e in heldout
            if e.id in got.completions and e.id in reference
        )
        result, _, _ = evaluate("gguf", ref, heldout, got.completions, run.graders,
                                run.task.labels, capture=run.judge())  # fmt: skip
        report["files"][q] = {
            "file": path.name,
            "sha256": digest,
            "readback": ref,
            "megabytes": round(path.stat().st_size / 1e6, 1),
            "agreement": same / len(heldout) if heldout else None,
            "accuracy": result.accuracy,
        }
        shutil.rmtree(back, ignore_errors=True)
    if files:
        smallest = min(files.values(), key=lambda p: p.stat().st_size)
        from transformers import AutoTokenizer

        template = AutoTokenizer.from_pretrained(model_dir).chat_template
        system = run.task.prompt_for("student").system
        (out / "Modelfile").write_text(
            gguf.modelfile(
                smallest.name,
                template if isinstance(template, str) else None,
                system if system and "{" not in system else None,
                list(run.task.generation.stop),
            )
        )
        report["modelfile"] = str(out / "Modelfile")
    (out / "gguf.json").write_text(json.dumps(report, indent=1))
    return report
