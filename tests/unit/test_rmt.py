"""RMT: the official memory cell, truncated BPTT's exact reach, own modules beside the base, generation, training."""

from __future__ import annotations

import json

import pytest
import torch

from harness.cli import main
from harness.core.errors import UserError
from harness.training import TrainSpec, train
from methods.base import METHODS
from methods.baselines.rmt import RMT, RMTConfig, RMTTrainConfig

SMALL = {"segment": 8, "memory_tokens": 2, "lora_rank": 2, "lora_alpha": 4}
BOOK = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 40


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed))


def _perturb(method: RMT, seed: int = 0) -> RMT:
    """Trained-looking weights: LoRA B off zero (so A gets gradient), the memory and every copy moved."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in method.trainable_parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return method


def _reach(method: RMT, ids: torch.Tensor) -> tuple[dict[int, set[int]], set[int]]:
    """Per segment loss u: the segments whose input embeddings get gradient, and the losses reaching the memory."""
    segment = method.config.segment
    embeds = method.backbone.embed(ids[None])[0].detach().requires_grad_()
    losses = [loss for loss, _ in method.segment_losses(ids, embeds)]
    reach, memory = {}, set()
    for u, loss in enumerate(losses):
        on_embeds, on_memory = torch.autograd.grad(loss, [embeds, method.memory], retain_graph=True, allow_unused=True)
        norms = on_embeds.view(-1, segment, embeds.shape[1]).norm(dim=(1, 2))
        reach[u] = {s for s, norm in enumerate(norms.tolist()) if norm > 0}
        if on_memory is not None and on_memory.norm() > 0:
            memory.add(u)
    return reach, memory


def _assert_backward_is_autograd_of_the_whole_loss(method: RMT, ids: torch.Tensor, strategy: str, k2: int):
    """`document_gradients` (backpropagated at each cut) equals autograd of the summed segment losses; returns it."""
    method.train_config = RMTTrainConfig(strategy=strategy, k2=k2)
    named = method.named_trainable()
    expected = torch.autograd.grad(
        sum(loss for loss, _ in method.segment_losses(ids)) / (ids.numel() - 1), [*named.values()]
    )
    gradients = method.document_gradients(ids, strategy, window=k2)
    for name, want in zip(named, expected, strict=True):
        torch.testing.assert_close(gradients[name], want, rtol=1e-5, atol=1e-7)
    return gradients


FULL = {u: set(range(u + 1)) for u in range(5)}
# 5 segments; the memory written by segment t keeps its graph iff t == 0 or t + k2 > 5 (the fixed manage_gradients)
REACH = [
    ("bptt", 1, FULL, {0, 1, 2, 3, 4}),
    ("truncated", 1, {0: {0}, 1: {0, 1}, 2: {2}, 3: {3}, 4: {4}}, {0, 1}),
    ("truncated", 2, {0: {0}, 1: {0, 1}, 2: {2}, 3: {3}, 4: {4}}, {0, 1}),  # the link t=4 does not exist
    ("truncated", 3, {0: {0}, 1: {0, 1}, 2: {2}, 3: {3}, 4: {3, 4}}, {0, 1}),
    ("truncated", 4, {0: {0}, 1: {0, 1}, 2: {2}, 3: {2, 3}, 4: {2, 3, 4}}, {0, 1}),
    ("truncated", 5, FULL, {0, 1, 2, 3, 4}),
]


@pytest.mark.parametrize(("strategy", "k2", "reach", "memory"), REACH)
def test_a_segment_loss_reaches_exactly_the_segments_the_official_truncation_keeps(
    strategy, k2, reach, memory, tiny_llama
):
    method = _perturb(RMT(*tiny_llama, RMTConfig(**SMALL)))
    method.train_config = RMTTrainConfig(strategy=strategy, k2=k2)
    assert _reach(method, _ids(40)) == (reach, memory)


def test_backpropagating_at_each_cut_gives_the_gradient_of_the_whole_loss(tiny_llama):
    method = _perturb(RMT(*tiny_llama, RMTConfig(**SMALL)))
    ids = _ids(37)  # 5 segments, the last of 5 tokens
    gradients = _assert_backward_is_autograd_of_the_whole_loss(method, ids, "truncated", 3)
    full = method.document_gradients(ids, "bptt", window=1)
    assert (full["memory"] - gradients["memory"]).abs().max() > 1e-6


def test_lch_gradients_compares_truncation_with_full_bptt(tmp_path, capsys):
    (tmp_path / "1_book.txt").write_text(BOOK)
    code = main(["gradients", "--method", "rmt", "--model", "tiny-random-llama", "--data", str(tmp_path),
                 "--documents", "1", "--seq-len", "40", "--segment", "8", "--memory-tokens", "2",
                 "--lora-rank", "2", "--window", "1,5", "--csv"])  # fmt: skip
    assert code == 0
    out, err = capsys.readouterr()
    assert "3/3" in err  # the progress bar: one reference and two truncation gradients
    rows = {tuple(line.split(",")[:2]): line.split(",") for line in out.strip().splitlines()[1:]}
    assert set(rows) == {("truncated", "1"), ("truncated", "5")}  # the default: every strategy but the exact one
    assert float(rows["truncated", "5"][2]) == pytest.approx(1.0, abs=1e-6)  # k2 >= segments: full BPTT
    assert float(rows["truncated", "1"][2]) < 0.9999


@pytest.mark.parametrize("length", [8, 16])  # one segment, two
def test_score_is_the_official_memory_cell_on_transformers(length, tiny_llama):
    """Untrained (LoRA at zero): each segment is the HF model on `[memory ; tokens ; memory]` as `MemoryCell`."""
    model, tokenizer = tiny_llama
    method = RMT(model, tokenizer, RMTConfig(**SMALL))
    ids = _ids(length)
    memory, logits = method.memory.detach()[None], []
    with torch.no_grad():
        for start in range(0, length, 8):
            embeds = model.model.embed_tokens(ids[None, start : start + 8])
            out = model(inputs_embeds=torch.cat([memory, embeds, memory], dim=1), output_hidden_states=True)
            logits.append(out.logits[0, 2:-2])
            memory = out.hidden_states[-1][:, -2:]  # after the final norm
    expected = torch.log_softmax(torch.cat(logits)[:-1].float(), -1).gather(-1, ids[1:, None]).squeeze(-1)
    torch.testing.assert_close(method.score(ids), expected, atol=1e-5, rtol=0)


def test_without_memory_segments_are_full_attention_over_disjoint_windows(tiny_llama):
    method = RMT(*tiny_llama, RMTConfig(**{**SMALL, "memory_tokens": 0}))
    full = METHODS.get("full")(*tiny_llama, METHODS.get("full").Config())
    ids = _ids(20)
    expected = []
    for start in range(0, 20, 8):
        full.reset()
        expected.append(full.score(ids[start : start + 9]))  # the window's last token predicts the next window's first
    torch.testing.assert_close(method.score(ids), torch.cat(expected)[:19], atol=1e-5, rtol=0)
    assert method.trainable_parameters() and all("lora" in name for name in method.named_trainable())


def test_with_the_memory_cut_every_segment_scores_as_a_new_document(tiny_llama):
    torch.manual_seed(0)  # LoRA A's initial draw, the same for both
    whole = _perturb(RMT(*tiny_llama, RMTConfig(**SMALL)))
    torch.manual_seed(0)
    cut = _perturb(RMT(*tiny_llama, RMTConfig(**SMALL, read_memory=False)))
    ids = _ids(29)  # 4 segments, the last of 5 tokens
    alone = torch.cat([whole.score(ids[start : start + 9]) for start in range(0, 29, 8)])
    torch.testing.assert_close(cut.score(ids), alone, atol=1e-5, rtol=0)
    assert (whole.score(ids) - alone).abs().max() > 1e-4  # the memory does change the whole document's scores
    cut.reset()
    whole.reset()
    cut.prefill(ids)
    whole.prefill(ids[24:])
    assert cut.decode(5, stop_ids=[]) == whole.decode(5, stop_ids=[])
    assert not cut.beyond_trained_memory(10_000)
    assert cut.variant == "memory cut" and whole.variant is None  # reports label the control as such


@pytest.mark.parametrize("read_memory", [True, False])
def test_a_whole_decoder_trains_through_cuts_without_sharing_a_freed_graph(read_memory, tiny_llama):
    method = _perturb(RMT(*tiny_llama, RMTConfig(**SMALL, trainable="full", read_memory=read_memory)))
    ids = _ids(37)  # 5 segments: truncated k2=2 cuts after segments 1, 2 and 3 (without read_memory, after each)
    gradients = _assert_backward_is_autograd_of_the_whole_loss(method, ids, "truncated", 2)
    assert gradients["parts.embed_tokens.weight"].abs().sum() > 0


def test_with_the_memory_cut_each_loss_reaches_its_own_segment_and_the_initial_memory(tiny_llama):
    method = _perturb(RMT(*tiny_llama, RMTConfig(**SMALL, read_memory=False)))
    ids = _ids(37)
    assert _reach(method, _ids(40)) == ({u: {u} for u in range(5)}, set(range(5)))
    _assert_backward_is_autograd_of_the_whole_loss(method, ids, "bptt", 1)  # backpropagated segment by segment


def test_a_document_after_another_scores_as_in_a_fresh_method(tiny_llama):
    torch.manual_seed(0)  # LoRA A's initial draw
    method = _perturb(RMT(*tiny_llama, RMTConfig(**SMALL)))
    first, second = _ids(30, seed=1), _ids(30, seed=2)
    method.score(first)
    after = method.score(second)
    method.prefill(first)
    method.decode(3, stop_ids=[])
    method.reset()
    assert method.state_bytes() == 0
    assert torch.equal(method.score(second), after)
    torch.manual_seed(0)
    fresh = _perturb(RMT(*tiny_llama, RMTConfig(**SMALL)))
    assert torch.equal(fresh.score(second), after)


@pytest.mark.parametrize("trainable", ["lora", "full"])
def test_gradients_reach_exactly_the_trainable_set_and_the_shared_base_is_never_written(trainable, tiny_llama):
    model, tokenizer = tiny_llama
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    method = _perturb(RMT(model, tokenizer, RMTConfig(**SMALL, trainable=trainable)))
    method.backward_document(_ids(30))
    reached = {name for name, p in method.named_trainable().items() if p.grad is not None and p.grad.abs().sum() > 0}
    expected = {"memory"}
    for i in range(model.config.num_hidden_layers):
        layer = f"parts.layers.{i}"
        if trainable == "lora":
            expected |= {f"{layer}.self_attn.{p}_proj.lora_{ab}.rmt.weight" for p in "qv" for ab in "AB"}
        else:
            expected |= {f"{layer}.self_attn.{p}_proj.weight" for p in "qkvo"}
            expected |= {f"{layer}.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
            expected |= {f"{layer}.{norm}.weight" for norm in ("input_layernorm", "post_attention_layernorm")}
    if trainable == "full":
        expected |= {"parts.embed_tokens.weight", "parts.norm.weight"}
    assert reached == expected == set(method.named_trainable())
    assert all(p.grad is None for p in model.parameters())
    scores = method.score(_ids(30))
    torch.optim.SGD(method.trainable_parameters(), lr=1.0).step()
    assert (method.score(_ids(30)) - scores).abs().max() > 1e-4  # the step moved the method
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize("trainable", ["lora", "full"])
def test_a_checkpoint_round_trip_evaluates_identically(trainable, tiny_llama, tmp_path):
    method = _perturb(RMT(*tiny_llama, RMTConfig(**SMALL, trainable=trainable)), seed=3)
    method.save(tmp_path)
    reloaded = RMT(*tiny_llama, RMTConfig(**SMALL, trainable=trainable, checkpoint=str(tmp_path)))
    ids = _ids(30)
    assert torch.equal(method.score(ids), reloaded.score(ids))
    assert reloaded.untrained is False and RMT(*tiny_llama, RMTConfig(**SMALL)).untrained
    assert not RMT(*tiny_llama, RMTConfig(**{**SMALL, "memory_tokens": 0})).untrained  # the no-memory control
    with pytest.raises(UserError, match="memory is \\(2, 64\\), expected \\(3, 64\\)"):
        RMT(*tiny_llama, RMTConfig(**{**SMALL, "memory_tokens": 3}, trainable=trainable, checkpoint=str(tmp_path)))


def test_prefill_and_decode_follow_the_official_generate(tiny_llama):
    method = _perturb(RMT(*tiny_llama, RMTConfig(**{**SMALL, "segment": 16})))
    prompt = _ids(40)  # segments of 16, 16 and 8: the last 8 tokens and the decoded ones share a segment in score()
    method.prefill(prompt)
    decoded = torch.tensor(method.decode(6, stop_ids=[]))
    _, greedy = method.score(torch.cat([prompt, decoded]), greedy=True)
    assert greedy[-6:].all()
    # A prompt of whole segments keeps its last one as the decoding context, after the memory of the others.
    method.reset()
    method.prefill(prompt[:32])
    memory_bytes = 2 * 64 * 4
    assert method.state_bytes() == memory_bytes + (2 + 16) * method.backbone.kv_bytes_per_token()
    token = method.decode(1, stop_ids=[])
    _, greedy = method.score(torch.cat([prompt[:32], torch.tensor(token)]), greedy=True)
    assert greedy[-1]


def test_positions_and_memories_beyond_training(tiny_llama, tmp_path):
    method = RMT(*tiny_llama, RMTConfig(**SMALL))
    assert not method.beyond_trained_window(10**6)  # positions restart every segment
    assert method.trained_extent(65) == {"longest_document": 65, "most_segments": 9}
    with pytest.raises(UserError, match="segment 4090 \\+ 2 x memory_tokens 4 = 4098 positions > the model's window"):
        RMT.check_document_length(RMTConfig(segment=4090, memory_tokens=4), 8192, 4096)


def _train_args(data, out, *extra):
    return ["train", "rmt", "--model", "tiny-random-llama", "--data", str(data), "--stages", "32:3,64:3",
            "--segment", "16", "--memory-tokens", "4", "--lora-rank", "2", "--lora-alpha", "4",
            "--strategy", "truncated", "--k2", "3", "--lr", "1e-2", "--checkpoint-every", "2", "--quiet",
            "--out", str(out), *extra]  # fmt: skip


class Stop(Exception):
    pass


def test_lch_train_rmt_with_stages_resumes_mid_stage_with_the_same_losses(tmp_path, tiny_llama):
    data = tmp_path / "books"
    data.mkdir()
    (data / "1_book.txt").write_text(BOOK)
    assert main(_train_args(data, tmp_path / "whole")) == 0
    written = json.loads((tmp_path / "whole" / "training.json").read_text())
    optimizer = (written["lr"], written["weight_decay"], written["warmup"], written["schedule"], written["betas"])
    assert optimizer == (1e-2, 1e-3, 0.1, "linear", [0.9, 0.999])  # --lr given, the rest the official defaults
    assert written["train_options"] == {"strategy": "truncated", "k2": 3}
    assert written["trained"] == {"longest_document": 64, "most_segments": 4}
    whole = [json.loads(line)["loss"] for line in (tmp_path / "whole" / "train_log.jsonl").read_text().splitlines()]
    assert len(whole) == 6 and len(set(whole)) == 6

    spec = TrainSpec.written(written | {"out": str(tmp_path / "cut")})

    def stop_after_five(row):
        if row["step"] == 5:  # mid second stage, one step past the step-4 checkpoint
            raise Stop

    with pytest.raises(Stop):
        train(spec, progress=False, on_step=stop_after_five)
    resumed = train(spec, resume=True, progress=False)
    assert [row["loss"] for row in resumed] == whole
    options = {"segment": 16, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 4}
    trained = RMT(*tiny_llama, RMTConfig(**options, checkpoint=str(tmp_path / "cut")))
    assert trained.trained_segments == 4
    assert not trained.beyond_trained_memory(64) and trained.beyond_trained_memory(65)
    untrained = RMT(*tiny_llama, RMTConfig(**options))
    assert (trained.score(_ids(64)) - untrained.score(_ids(64))).abs().max() > 1e-4
