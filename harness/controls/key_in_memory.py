"""The passkey control in small: a digit only the first segment holds, asked from the second.

Documents `K d f f | f f f ? | d` in segments of 4 (bytes: a key mark, the digit, filler letters, a question
mark, the digit as the answer): with segments of 4 the answer is predicted from a segment that never saw the
digit, so without memory the accuracy is at most chance (0.10: the digits are uniform). A method with memory
is trained on the answer alone (Adam, batches of 4 fresh documents) and scored by greedy accuracy over the whole
vocabulary on held-out documents. Tests run it on a tiny random Llama in seconds; `benchmarks/key_in_memory.py`
compares memory configurations over seeds.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from methods.token_loss import TokenLoss

LENGTH = 9


def sharp_llama(seed: int = 0) -> LlamaForCausalLM:
    """A tiny random Llama (2 layers, width 64, byte vocabulary), frozen, whose logits depend on its input.

    Initialiser range 0.3: the default 0.02 gives near-uniform outputs that no memory can steer, as no trained
    model's are. The global RNG is left as it was.
    """
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=258, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, initializer_range=0.3, bos_token_id=256, eos_token_id=257,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    torch.random.set_rng_state(state)
    return model


def document(digit: int, generator: torch.Generator) -> torch.Tensor:
    """`[9]` byte ids `K d f f f f f ? d`, the five filler letters drawn from `generator`."""
    filler = torch.randint(ord("a"), ord("z") + 1, (5,), generator=generator)
    key, asked, answer = ord("K"), ord("?"), ord("0") + digit
    return torch.cat([torch.tensor([key, answer]), filler, torch.tensor([asked, answer])])


def held_out(n: int = 50, seed: int = 99) -> list[torch.Tensor]:
    """`n` documents with the digits in turn, from their own seed (never a training draw)."""
    generator = torch.Generator().manual_seed(seed)
    return [document(i % 10, generator) for i in range(n)]


def train(method, steps: int, lr: float, seed: int = 1, batch: int = 4, log_every: int = 0) -> list[float]:
    """Train `method`'s trainable weights on the answer's loss; the held-out accuracy every `log_every` steps."""
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=lr)
    weights = torch.zeros(LENGTH)
    weights[-1] = 1  # the answer alone
    draws = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(1, steps + 1):
        optimizer.zero_grad(set_to_none=True)
        for digit in torch.randint(0, 10, (batch,), generator=draws).tolist():
            ids = document(digit, draws)
            method.reset()
            method.backward_document(ids, TokenLoss(ids, weights))
        optimizer.step()
        if log_every and step % log_every == 0:
            curve.append(accuracy(method, held_out()))
    return curve


def accuracy(method, documents) -> float:
    """Share of documents whose answer is the greedy prediction over the whole vocabulary."""
    right = 0
    for ids in documents:
        method.reset()
        _, greedy = method.score(ids, greedy=True)
        right += int(greedy[-1])
    return right / len(documents)
