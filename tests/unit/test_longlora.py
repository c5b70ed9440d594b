"""LongLoRA: the LoRA+ trainable set, training attention, own modules beside the shared base, checkpoints."""

from __future__ import annotations

import copy
import json
import sqlite3

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.cli import main
from harness.models import byte_tokenizer, load_model
from methods.baselines.longlora import LongLoRA, LongLoRAConfig, LongLoRATrainConfig

TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 12
TINY = ["--model", "tiny-random-llama", "--lora-rank", "2", "--lora-alpha", "4", "--quiet"]


def _ids(n: int = 96) -> torch.Tensor:
    return torch.tensor(list(TEXT.encode())[:n])


def _perturb(method: LongLoRA, seed: int = 0) -> None:
    """Trained-looking weights: every trainable tensor moved (LoRA B off zero, embedding and norms off the base)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in method.trainable_parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def _base_state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_gradients_reach_exactly_lora_on_qkvo_the_input_embedding_and_every_norm(tiny_llama):
    model, tokenizer = tiny_llama
    method = LongLoRA(model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4))
    _perturb(method)  # LoRA A and B both nonzero, so both get gradient
    method.backward_document(_ids())
    reached = {name for name, p in method.parts.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    layers = model.config.num_hidden_layers
    expected = {"embed_tokens.weight", "norm.weight"}
    for i in range(layers):
        expected |= {f"layers.{i}.{norm}.weight" for norm in ("input_layernorm", "post_attention_layernorm")}
        for projection in ("q_proj", "k_proj", "v_proj", "o_proj"):
            expected |= {f"layers.{i}.self_attn.{projection}.lora_{ab}.longlora.weight" for ab in "AB"}
    assert reached == expected
    assert all(p.grad is None for p in model.parameters())  # the shared base: lm_head, MLPs, projections


def test_trainable_params_norm_trains_lora_and_norms_and_its_checkpoint_evaluates_without_an_embedding(tmp_path):
    from safetensors import safe_open

    assert _train(tmp_path, "--method-opt", "trainable_params=norm") == 0
    spec = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert spec["checkpoint_options"]["trainable_params"] == "norm"
    with safe_open(str(tmp_path / "ckpt" / "longlora.safetensors"), "pt") as weights:
        keys = set(weights.keys())
    assert "norm.weight" in keys and not any(key.startswith("embed_tokens") for key in keys)
    model, tokenizer = load_model("tiny-random-llama")
    method = LongLoRA(model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4, checkpoint=str(tmp_path / "ckpt"),
                                                       trainable_params="norm"))  # fmt: skip
    assert method.backbone.embed(torch.tensor([[1, 2]])).equal(model.model.embed_tokens(torch.tensor([[1, 2]])))
    with pytest.raises(Exception, match="lacks embed_tokens"):
        LongLoRA(model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4, checkpoint=str(tmp_path / "ckpt")))


def test_training_loss_with_full_attention_is_the_scored_negative_log_likelihood(tiny_llama):
    model, tokenizer = tiny_llama
    method = LongLoRA(model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4, chunk_size=32))
    _perturb(method)
    method.train_config = LongLoRATrainConfig(attention="full")
    ids = _ids()
    loss = method.backward_document(ids)
    method.reset()
    assert loss == pytest.approx(float(-method.score(ids).mean()), rel=1e-5)


def test_s2_attention_changes_the_training_loss_and_one_group_over_twice_the_document_does_not(tiny_llama):
    model, tokenizer = tiny_llama
    method = LongLoRA(model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4))
    _perturb(method)
    ids = _ids()
    losses = {}
    for name, config in {
        "full": LongLoRATrainConfig(attention="full"),
        "s2": LongLoRATrainConfig(),
        "one-group": LongLoRATrainConfig(group_ratio=1.0),  # G = N: the shifted half still splits at N/2
    }.items():
        method.train_config = config
        losses[name] = method.backward_document(ids)
    assert abs(losses["s2"] - losses["full"]) > 1e-4
    assert abs(losses["one-group"] - losses["full"]) > 1e-6


def test_s2_attn_at_inference_scores_in_chunks_what_the_training_attention_computes_in_one_pass(tiny_llama):
    """Chunked scoring over the cache (chunks that cut groups) equals S²-Attn over the whole document."""
    model, tokenizer = tiny_llama
    method = LongLoRA(model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4, chunk_size=7, attention="s2"))
    _perturb(method)
    method.train_config = LongLoRATrainConfig()  # S²-Attn, default variant, groups of a quarter
    ids = _ids()
    loss = method.backward_document(ids)
    method.reset()
    scored = method.score(ids)
    assert loss == pytest.approx(float(-scored.mean()), rel=1e-5)
    assert method.variant == "S2-Attn at inference"
    full = LongLoRA(model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4, chunk_size=7))
    full.parts.load_state_dict(method.parts.state_dict())
    assert full.variant is None and not torch.allclose(full.score(ids), scored, atol=1e-4)


def test_two_longlora_methods_on_one_base_never_see_each_others_weights(tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    before = _base_state(model)
    trained = LongLoRA(model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4, rope_factor=2.0))
    _perturb(trained)
    trained.backward_document(_ids())
    trained.save(tmp_path)
    plain = LongLoRA(model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4))
    ids = _ids()
    plain_scores, trained_scores = plain.score(ids), trained.score(ids)
    plain.reset()
    assert torch.equal(plain.score(ids), plain_scores)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    fresh_model, _ = load_model("tiny-random-llama")
    fresh = LongLoRA(fresh_model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4))
    assert torch.equal(fresh.score(ids), plain_scores)
    assert (trained_scores - plain_scores).abs().max() > 1e-3


def test_a_trained_input_embedding_leaves_the_tied_output_layer_as_the_base_model_has_it():
    config = LlamaConfig(
        vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    base_embedding = model.lm_head.weight.clone()
    method = LongLoRA(model, byte_tokenizer(), LongLoRAConfig(lora_rank=2, lora_alpha=4))
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=1.0)
    method.backward_document(_ids(64))
    optimizer.step()
    assert (method.parts.embed_tokens.weight - base_embedding).abs().max() > 1e-4  # the input embedding trained
    assert torch.equal(model.lm_head.weight, base_embedding)  # the output layer did not
    hidden = torch.randn(3, 32)
    assert torch.equal(method.backbone.logits(hidden), model.lm_head(hidden).float())


def test_a_checkpoint_round_trip_evaluates_identically(tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    method = LongLoRA(model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4, rope_factor=2.0))
    _perturb(method, seed=3)
    method.save(tmp_path)
    config = LongLoRAConfig(lora_rank=2, lora_alpha=4, rope_factor=2.0, checkpoint=str(tmp_path))
    reloaded = LongLoRA(model, tokenizer, config)
    ids = _ids()
    assert torch.equal(method.score(ids), reloaded.score(ids))


def _train(root, *extra) -> int:
    (root / "books").mkdir(exist_ok=True)
    (root / "books" / "1_story.txt").write_text(TEXT * 3)
    return main(["train", "longlora", "--data", str(root / "books"), "--steps", "2", "--seq-len", "64",
                 "--out", str(root / "ckpt"), *TINY, *extra])  # fmt: skip


def test_training_writes_the_rope_factor_into_the_checkpoint_and_evaluation_takes_it(tmp_path, capsys):
    assert _train(tmp_path, "--rope-factor", "2") == 0
    spec = json.loads((tmp_path / "ckpt" / "training.json").read_text())
    assert spec["checkpoint_options"] == {
        "rope_factor": 2.0, "lora_rank": 2, "lora_alpha": 4, "trainable_params": "embed,norm"
    }  # fmt: skip
    assert (spec["lr"], spec["weight_decay"], spec["schedule"]) == (2e-5, 0.0, "constant")  # fine-tune.py's
    assert spec["activation_checkpointing"] is True  # fine-tune.py's gradient checkpointing, on by default
    store = tmp_path / "s.sqlite"
    common = ["eval", "--model", "tiny-random-llama", "--method", "longlora", "--task", "perplexity",
              "--lengths", "200", "--samples", "1", "--output", str(store), "--quiet",
              "--task-opt", f"data_dir={tmp_path}", "--task-opt", "documents=all"]  # fmt: skip
    assert main([*common, "--method-opt", f"checkpoint={tmp_path / 'ckpt'}"]) == 0
    with sqlite3.connect(store) as db:
        (config,) = db.execute("SELECT method_config FROM cells").fetchone()
    assert '"rope_factor": 2.0' in config and '"lora_rank": 2' in config
    capsys.readouterr()
    status = main([*common, "--method-opt", f"checkpoint={tmp_path / 'ckpt'}", "--method-opt", "rope_factor=3"])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1
    assert f"rope_factor=3 contradicts checkpoint '{tmp_path / 'ckpt'}', trained with rope_factor=2.0" in error[0]


def test_activation_checkpointing_can_be_turned_off(tmp_path):
    assert _train(tmp_path, "--no-activation-checkpointing") == 0
    assert json.loads((tmp_path / "ckpt" / "training.json").read_text())["activation_checkpointing"] is False


def test_training_past_the_window_sets_the_official_interpolation_factor(tmp_path, monkeypatch):
    from harness import training

    seen = {}
    original = training.build_trainable

    def spy(spec, config, train_config, loaded=None, device=None):
        tiny = load_model("tiny-random-llama")
        short = copy.deepcopy(tiny[0])
        short.config.max_position_embeddings = 24  # a 64-token document is 2.67 windows: factor ceil = 3
        method = original(spec, config, train_config, (short, tiny[1]))
        seen["factor"] = method.config.rope_factor
        return method

    monkeypatch.setattr(training, "build_trainable", spy)
    assert _train(tmp_path) == 0
    assert seen["factor"] == 3.0


def _perplexities(store) -> dict[str, float]:
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT c.label, s.score FROM samples s JOIN cells c USING (cell_id)").fetchall()
    return dict(rows)


def test_a_trained_and_an_untrained_cell_of_one_sweep_each_score_as_a_fresh_load(tmp_path):
    assert _train(tmp_path, "--rope-factor", "2") == 0
    task = f"{{name: perplexity, lengths: [200], options: {{data_dir: {tmp_path}, documents: all}}}}"
    cells = {"trained": f"{{checkpoint: {tmp_path / 'ckpt'}}}", "plain": "{lora_rank: 2, lora_alpha: 4}"}
    methods = ", ".join(f"{{name: longlora, label: {label}, options: {options}}}" for label, options in cells.items())
    sweep = tmp_path / "both.yaml"
    sweep.write_text(f"model: tiny-random-llama\noutput: {tmp_path}/both.sqlite\nsamples: 1\n"
                     f"methods: [{methods}]\ntasks: [{task}]\n")  # fmt: skip
    assert main(["run", str(sweep), "--quiet"]) == 0
    together = _perplexities(tmp_path / "both.sqlite")
    for label, options in cells.items():
        alone = tmp_path / f"{label}.yaml"
        method = f"{{name: longlora, label: {label}, options: {options}}}"
        alone.write_text(f"model: tiny-random-llama\noutput: {tmp_path}/{label}.sqlite\nsamples: 1\n"
                         f"methods: [{method}]\ntasks: [{task}]\n")  # fmt: skip
        assert main(["run", str(alone), "--quiet"]) == 0
        assert together[label] == _perplexities(tmp_path / f"{label}.sqlite")[label]
    assert abs(together["trained"] - together["plain"]) > 1e-3


def test_activation_checkpointing_gives_the_same_loss_and_gradients(tiny_llama):
    model, tokenizer = tiny_llama
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)  # LoRA A draws its initial weights from the global generator
        method = LongLoRA(model, tokenizer, LongLoRAConfig(lora_rank=2, lora_alpha=4))
        _perturb(method)
        method.backbone.checkpoint_layers = recompute
        loss = method.backward_document(_ids())
        grads.append((loss, [p.grad.clone() for p in method.trainable_parameters()]))
    (plain_loss, plain), (recomputed_loss, recomputed) = grads
    assert plain_loss == recomputed_loss
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, recomputed, strict=True))


def test_trainable_params_takes_the_flags_spelling_and_stays_out_of_old_cells_identity(tmp_path):
    from harness.sweep import expand, load_sweep

    assert LongLoRAConfig(trainable_params=["embed", "norm"]).trainable_params == "embed,norm"  # `--method-opt a,b`
    sweep = tmp_path / "s.yaml"
    sweep.write_text("model: tiny-random-llama\nmethods: [{name: longlora}, {name: longlora, label: n, options: "
                     "{trainable_params: norm}}]\ntasks: [{name: passkey, lengths: [300]}]\n")  # fmt: skip
    default, norm = (cell.identity["method_config"] for cell in expand(load_sweep(sweep)))
    assert "trainable_params" not in default  # as before the option existed: those stores resume
    assert norm["trainable_params"] == "norm"
