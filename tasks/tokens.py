"""Tokenizer helpers shared by tasks: plain ids, the BOS a tokenizer adds, the chat-template frame, stop ids."""

from __future__ import annotations

BODY = "\x00BODY\x00"  # a placeholder no template contains, split on to find the frame around the body


def ids(tokenizer, text: str) -> list[int]:
    """Token ids of `text` without special tokens."""
    return tokenizer(text, add_special_tokens=False).input_ids


def bos_prefix(tokenizer) -> list[int]:
    """`[bos]` when the tokenizer adds a BOS by default (Llama-2), else `[]` (SmolLM2)."""
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and tokenizer("a").input_ids[:1] == [bos] else []


def wants_chat_template(tokenizer, policy: str) -> bool:
    """A task's `chat_template` option: `on` always, `auto` when the tokenizer has a template, `off` never."""
    return policy == "on" or (policy == "auto" and bool(getattr(tokenizer, "chat_template", None)))


def chat_frame(tokenizer) -> tuple[str, str]:
    """Text of the chat template before and after a single user message, generation prompt included."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": BODY}], tokenize=False, add_generation_prompt=True
    )
    before, after = rendered.split(BODY)
    return before, after


def eos_stop(tokenizer) -> list[int]:
    """The EOS id as a stop list (empty when the tokenizer has none)."""
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
