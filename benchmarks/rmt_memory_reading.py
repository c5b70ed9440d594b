"""How RMT's last segment reads its memory: the scale of the memory it reads and the attention it pays it.

For passkey prompts of 4 segments of 64 (needle at depth 0, in segment 0), RMT runs the first three segments
through its memory cell and the last through a recording attention. Per layer, the share of the attention
of the last segment's tokens (the question, whose last token predicts the answer) that falls on the m memory
slots, and on slot 0 alone; and the RMS of the vectors read (the learned memory in segment 0, written
memories after) against the token embeddings'. The same segment without memory, preceded by the m tokens
before it, gives the base model's own share on its first m positions (the attention sink).

    python benchmarks/rmt_memory_reading.py --method-opt segment=64 --method-opt memory_tokens=8
    python benchmarks/rmt_memory_reading.py --method-opt checkpoint=out/passkey-curriculum/rmt-curriculum

`--rescale` reads the last written memory scaled down to the token embeddings' RMS: whether the scale alone
keeps the attention off the memory.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from harness.checkpoints import method_config
from harness.cli_values import options as cli_options  # lch's K=V reader, as `lch eval --method-opt`
from harness.models import load_model
from methods.attention import bottom_right_mask, repeat_kv, rotate
from methods.baselines.rmt import RMT, memory_cell
from tasks.passkey import ANSWER_PREFIX, PasskeyPrompt
from tasks.tokens import ids as ids_of


class RecordingAttention:
    """Causal attention within one segment that keeps, per layer, the share of attention on the first `m` keys."""

    def __init__(self, backbone, m: int):
        self.backbone, self.m = backbone, m
        self.on_memory: list[float] = []
        self.on_first: list[float] = []

    def attend(self, layer, q, k, v, positions):
        """Plain causal softmax attention (explicit weights, to record them)."""
        cos, sin = self.backbone.rope(positions)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        k, v = (repeat_kv(x, q.shape[1] // x.shape[1]) for x in (k, v))
        t = q.shape[2]
        scores = (q @ k.transpose(-1, -2)) * self.backbone.scale
        weights = scores.masked_fill(~bottom_right_mask(t, t, q.device), float("-inf")).softmax(-1)
        on_segment = weights[:, :, self.m :]  # the segment's tokens as queries
        self.on_memory.append(float(on_segment[..., : self.m].sum(-1).mean()))
        self.on_first.append(float(on_segment[..., :1].sum(-1).mean()))
        return weights @ v


def rms(x: torch.Tensor) -> float:
    """Mean over vectors of each vector's root mean square."""
    return float(x.float().pow(2).mean(-1).sqrt().mean())


@torch.no_grad()
def main() -> None:
    """Print per-layer attention shares and memory scales for RMT and the base model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method-opt", action="append", default=[], metavar="K=V")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument(
        "--rescale", action="store_true", help="read each written memory scaled to the token embeddings' RMS (a probe)"
    )
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2-135m")
    rmt = RMT(model, tokenizer, method_config(RMT, cli_options(args.method_opt, "--method-opt"), "method 'rmt'"))
    backbone, segment, m = rmt.backbone, rmt.config.segment, rmt.config.memory_tokens
    prompt = PasskeyPrompt(tokenizer, [], ids_of(tokenizer, " " + ANSWER_PREFIX), 4 * segment)
    shares, first, base_shares, base_first, scales = [], [], [], [], []
    for index in range(args.samples):
        ids, _ = prompt(4 * segment, 10000 + 7919 * index % 90000, 0.0)
        ids = torch.tensor(ids)
        embeds = backbone.embed(ids)
        memory = rmt.memory
        read = [rms(memory)]
        for start in range(0, 3 * segment, segment):
            _, memory = memory_cell(backbone, memory, embeds[start : start + segment])
            read.append(rms(memory))
        scales.append(read)
        recorder = RecordingAttention(backbone, m)
        if args.rescale:
            memory = memory * (rms(embeds) / rms(memory))
        x = torch.cat([memory, embeds[3 * segment :]])
        backbone(x[None], torch.arange(x.shape[0]), recorder)
        shares.append(recorder.on_memory)
        first.append(recorder.on_first)
        plain = RecordingAttention(backbone, m)
        window = embeds[3 * segment - m :]
        backbone(window[None], torch.arange(window.shape[0]), plain)
        base_shares.append(plain.on_memory)
        base_first.append(plain.on_first)
    mean = lambda rows: [statistics.fmean(column) for column in zip(*rows, strict=True)]  # noqa: E731
    print(f"token embedding RMS {rms(backbone.embed(ids)):.3f}; memory read RMS by segment 0..3: "
          + " / ".join(f"{value:.3f}" for value in mean(scales)))  # fmt: skip
    print("layer | attention on the memory slots (slot 0) | base model on its first m positions (position 0)")
    for layer, values in enumerate(zip(mean(shares), mean(first), mean(base_shares), mean(base_first), strict=True)):
        print(f"{layer:5d} | {values[0]:.3f} ({values[1]:.3f}) | {values[2]:.3f} ({values[3]:.3f})")


if __name__ == "__main__":
    main()
