"""RMT's associative retrieval from scratch (Bulatov et al. 2022, arXiv 2207.06881): no segment solves it alone.

Official task (booydar/LM-RMT, `pytorch/experiment_utils/generate_data.py`, `retrieval_generator`, with
`pytorch/run_retrieval.sh`): K = 4 (letter, digit) pairs and a query letter, then a separator after which
the query's digit is the target; vocabulary 37 (digits 0-9, separator 10, letters 11-36, no letter twice
in a sample); 10,000 training, 1,000 validation and 2,000 test samples, distinct. Split into segments of
3, the 10 inputs fall as `k1 v1 k2 | v2 k3 v3 | k4 v4 q | SEP`: the segment that predicts the answer holds
the separator alone, so without memory no model beats the most frequent digit (chance, 0.10; published
0.099), and with 3 memory tokens the paper's 6-layer, 64-wide model reaches 0.986 / 0.994 / 0.996 on three
seeds (a third to a half of its seeds ended at chance).

Here the model is lch's own RMT (`methods.baselines.rmt`, `trainable: full`, every segment through its
`memory_cell`, memory never detached: full BPTT, the paper's `--mem_backprop_depth 0`) around a randomly
initialised Llama of the paper's size (6 layers, d 64, 4 heads of 32, MLP 128); a batch of documents runs
through each segment at once. Deviations, each for the 2-core budget or because lch's RMT is the decoder
(Hugging Face) wrapper, not the Transformer-XL one: Llama (RoPE, RMSNorm, SwiGLU) for Transformer-XL;
memory read at the start and written at the end of every segment (the paper's `--mem_at_end` writes at the
end and reads from the cache); the output layer frozen at its random initialisation (lch's RMT never trains
it; 37 outputs from 64 dimensions lose nothing); no dropout; Adam at a constant `lr` (default 1e-3, the
paper 1e-4 halved on plateaus over up to 10^5-10^6 steps) with the paper's gradient clip 0.25 and batch 32;
each batch drawn afresh from the generator (`fresh`, never a validation or test row), where the paper
cycled its 10,000 training samples: without its dropout, the fixed set is memorised (seed 0 here: training
loss 0.81 and validation accuracy 0.46 after 9,000 steps, still falling and flat).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from methods.baselines.rmt import RMT, RMTConfig, memory_cell

DIGITS = 10
SEPARATOR = 10
FIRST_LETTER = 11
LETTERS = 26
VOCAB = FIRST_LETTER + LETTERS


def samples(n: int, pairs: int, generator: torch.Generator) -> torch.Tensor:
    """`[n, 2 * pairs + 3]` rows `k1 v1 .. kK vK q SEP answer`: distinct letters, digits and the query uniform."""
    keys = torch.rand(n, LETTERS, generator=generator).argsort(dim=1)[:, :pairs] + FIRST_LETTER
    values = torch.randint(0, DIGITS, (n, pairs), generator=generator)
    asked = torch.randint(0, pairs, (n, 1), generator=generator)
    body = torch.stack([keys, values], dim=2).reshape(n, 2 * pairs)
    tail = [keys.gather(1, asked), torch.full((n, 1), SEPARATOR), values.gather(1, asked)]
    return torch.cat([body, *tail], dim=1)


@dataclass(frozen=True)
class Splits:
    """Distinct samples for training, validation and test (the official 10,000 / 1,000 / 2,000)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def splits(seed: int, pairs: int = 4, sizes: tuple[int, int, int] = (10_000, 1_000, 2_000)) -> Splits:
    """Draw the three sets from one seed, every row distinct from every other (as the official de-duplication)."""
    generator = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    rows = samples(0, pairs, generator)
    for _ in range(8):  # each draw at least doubles the distinct rows while many are left
        rows = torch.unique(torch.cat([rows, samples(2 * total, pairs, generator)]), dim=0)
        if rows.shape[0] >= total:
            break
    else:
        raise ValueError(f"only {rows.shape[0]} distinct samples with {pairs} pairs; {total} needed")
    rows = rows[torch.randperm(rows.shape[0], generator=generator)[:total]]  # unique() sorted them
    train, val, test = rows.split(list(sizes))
    return Splits(train, val, test)


def model(seed: int, layers: int = 6, hidden: int = 64, heads: int = 4, head_dim: int = 32, inner: int = 128):
    """A randomly initialised Llama of the paper's retrieval size (its 0.35M parameters, here with RoPE)."""
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=inner, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, head_dim=head_dim, max_position_embeddings=64,
        tie_word_embeddings=False,
    )  # fmt: skip
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return LlamaForCausalLM(config).eval().requires_grad_(False)
    finally:
        torch.random.set_rng_state(state)


def rmt(base: LlamaForCausalLM, segment: int, memory_tokens: int) -> RMT:
    """The RMT of lch over `base` with the whole decoder trainable (its own copies; the base stays as drawn)."""
    return RMT(base, None, RMTConfig(segment=segment, memory_tokens=memory_tokens, trainable="full"))


def answer_logits(method: RMT, rows: torch.Tensor) -> torch.Tensor:
    """`[B, V]` logits of each row's answer, read after its inputs went segment by segment through the memory cell.

    The inputs are every token but the answer; the last segment's last token (the separator) predicts it.
    """
    backbone, segment = method.backbone, method.config.segment
    embeds = backbone.embed(rows[:, :-1])
    starts = list(range(0, embeds.shape[1], segment))
    memory = method.memory
    for start in starts:
        hidden, memory = memory_cell(backbone, memory, embeds[:, start : start + segment], start != starts[-1])
    return backbone.logits(hidden[:, -1])


@torch.no_grad()
def accuracy(method: RMT, rows: torch.Tensor, batch: int = 1000) -> float:
    """Fraction of rows whose answer is the argmax of its logits."""
    right = sum(int((answer_logits(method, chunk).argmax(-1) == chunk[:, -1]).sum()) for chunk in rows.split(batch))
    return right / rows.shape[0]


@dataclass
class Training:
    """How one run trains: the paper's batch and clip, lch's constant `lr`, an early stop on validation."""

    steps: int = 20_000
    batch: int = 32
    lr: float = 1e-3
    clip: float = 0.25
    eval_every: int = 500
    stop_at: float = 0.99  # validation accuracy that ends the run (the paper stopped on a plateau)
    fresh: bool = True  # a new batch from the generator each step, never a validation or test row
    seed: int = 0


def train(method: RMT, data: Splits, how: Training, on_eval: Callable[[dict], None] | None = None) -> list[dict]:
    """Train with the answer's cross-entropy (on fresh batches, or on `data.train`); return the validation curve.

    Each row of the curve: step, training loss (mean since the last evaluation), validation accuracy.
    """
    parameters = method.trainable_parameters()
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(parameters, lr=how.lr)
    generator = torch.Generator().manual_seed(how.seed)
    held_out = {tuple(row) for row in torch.cat([data.val, data.test]).tolist()}
    pairs = (data.train.shape[1] - 3) // 2
    curve, losses = [], []
    for step in range(1, how.steps + 1):
        if how.fresh:
            drawn = samples(how.batch, pairs, generator)
            chunk = drawn[[tuple(row) not in held_out for row in drawn.tolist()]]
        else:
            chunk = data.train[torch.randint(0, data.train.shape[0], (how.batch,), generator=generator)]
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(answer_logits(method, chunk), chunk[:, -1])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, how.clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % how.eval_every == 0 or step == how.steps:
            row = {"step": step, "loss": sum(losses) / len(losses), "val_accuracy": accuracy(method, data.val)}
            curve.append(row)
            losses = []
            if on_eval:
                on_eval(row)
            if row["val_accuracy"] >= how.stop_at:
                break
    return curve
