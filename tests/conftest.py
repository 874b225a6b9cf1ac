"""Shared fixtures: an isolated STILL_HOME and a tiny random chat model built offline.

The tiny model is a real transformers Llama (2 layers, 64 hidden) with a byte-level BPE
tokenizer trained here on a few sentences and a ChatML chat template: everything the local
provider and the trainer touch, in a few megabytes and no download.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Who wrote the play? human",
    "Where is the river? location",
    "How many days? number",
    "What does NASA stand for? abbreviation",
    "What is a cat? entity description",
    "spam ham yes no the a of to and in is it you that was for on are with as I his they",
] * 20


@pytest.fixture(autouse=True)
def still_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own state folder: nothing leaks between tests or into ~/.cache.
    Its run folders live under its own temporary folder, the run root (STILL_RUNS)."""
    home = tmp_path / "still-home"
    monkeypatch.setenv("STILL_HOME", str(home))
    monkeypatch.setenv("STILL_RUNS", str(tmp_path))
    return home


def build_tiny_model(path: Path, chat: bool = True, seed: int = 0, vocab_size: int = 400) -> Path:
    """Save a tiny random Llama with a freshly trained BPE tokenizer to `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>" if chat else "<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    if chat:
        fast.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
        # trained models have larger embeddings than the 0.02 default; with tiny ones the
        # logits stay near-uniform and LoRA (which cannot touch them) cannot learn at all
        initializer_range=0.2,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chat model directory (ChatML template), built once per session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny base model directory: no chat template, prompted as plain text."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-base"), chat=False, seed=1)
