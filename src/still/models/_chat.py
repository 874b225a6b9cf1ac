"""Chat formatting shared by inference and training.

The prompt a model sees at inference and the prompt it is trained on must be tokenized the
same way, or the distilled student learns one format and is asked in another. Both the local
provider and the SFT recipe call these two functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from still.types import Message


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template (instruct models do, base models don't)."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The prompt text for the next assistant turn.

    Chat models use their template with the generation prompt; base models get the message
    contents joined by blank lines (prompt them few-shot).
    """
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=True
        )
        return str(text)
    return "\n\n".join(m.content for m in messages)


def continuation(tokenizer: Any, prompt: str, answer: str) -> str:
    """The text that follows `prompt` when the model answers `answer`.

    Base-model prompts end in a word ("Type:"), so the answer starts with a space; chat
    prompts end in the assistant header. Training appends the end-of-turn marker so the
    student learns to stop.
    """
    if has_chat_template(tokenizer) or not prompt or prompt[-1].isspace():
        return answer
    return " " + answer


def prompt_token_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Tokens of a rendered prompt; BOS is added for plain-text prompts only (templates add it)."""
    return list(tokenizer(prompt, add_special_tokens=not has_chat_template(tokenizer))["input_ids"])


def answer_token_ids(
    tokenizer: Any, prompt: str, answer: str, end_of_turn: bool = False
) -> list[int]:
    """Tokens of `answer` as the continuation of `prompt`, tokenized apart from the prompt."""
    ids = list(
        tokenizer(continuation(tokenizer, prompt, answer), add_special_tokens=False)["input_ids"]
    )
    if end_of_turn and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids
