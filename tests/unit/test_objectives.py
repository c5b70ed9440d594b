"""Training objectives through every trainable method: answer-only loss, label masking, distillation."""

from __future__ import annotations

import pytest
import torch

from harness.core.errors import UserError
from harness.objectives import check_teacher_window, document_loss, long_context_tokens, teacher_logprobs
from harness.training import TrainSpec
from harness.training_data import Example
from methods.base import METHODS
from methods.token_loss import TokenLoss

# Small options per trainable method; a method that becomes trainable fails `test_every_trainable_method_is_here`.
OPTIONS = {
    "uio": {"segment": 16, "memory_tokens": 4, "lora_rank": 2, "lora_alpha": 8},
    "rmt": {"segment": 16, "memory_tokens": 2, "lora_rank": 2, "lora_alpha": 8},
    "longlora": {"lora_rank": 2, "lora_alpha": 8},
}
# LongLoRA trains with S2-Attn and scores with full attention, by design: its training loss equals its
# scored NLL with full attention in training (the official ablation's), which these tests use.
TRAIN_OPTIONS = {"longlora": {"attention": "full"}}
LENGTH, ANSWER = 50, 40  # 3 whole segments of 16 and a last one of 2; the answer is the last 10 tokens
# Every gradient strategy takes the weights: UIO's four (window 1, so truncation bites) and RMT's truncated BPTT.
STRATEGIES = [
    *[("uio", {"strategy": strategy, "window": 1}) for strategy in ("bptt", "tbptt", "incremental", "unbiased")],
    ("rmt", {"strategy": "bptt"}),
    ("rmt", {"strategy": "truncated", "k2": 2}),
    ("longlora", {"attention": "full"}),
]


def test_every_trainable_method_is_here():
    assert {name for name in METHODS.names() if hasattr(METHODS.get(name), "TrainConfig")} == set(OPTIONS)


def _method(name, tiny_llama, train_options=None):
    cls = METHODS.get(name)
    torch.manual_seed(0)
    method = cls(*tiny_llama, cls.Config(**OPTIONS[name]))
    method.train_config = cls.TrainConfig(**(TRAIN_OPTIONS.get(name, {}) if train_options is None else train_options))
    with torch.no_grad():  # LoRA starts at zero: move every trainable weight so every path carries gradient
        for parameter in method.trainable_parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return method


def _ids(length=LENGTH, seed=1):
    return torch.randint(3, 250, (length,), generator=torch.Generator().manual_seed(seed))


def _answer_weights(length=LENGTH, answer=ANSWER):
    weights = torch.zeros(length)
    weights[answer:] = 1
    return weights


def _gradients(method):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in method.trainable_parameters()]


def _backward(method, ids, token_loss):
    for parameter in method.trainable_parameters():
        parameter.grad = None
    torch.manual_seed(3)  # UIO's reservoir draws
    loss = method.backward_document(ids, token_loss)
    return loss, _gradients(method)


@pytest.mark.parametrize(("name", "train_options"), STRATEGIES)
def test_answer_loss_is_the_mean_nll_of_the_answer_tokens_that_score_gives(name, train_options, tiny_llama):
    method = _method(name, tiny_llama, train_options)
    ids = _ids()
    loss, _ = _backward(method, ids, TokenLoss(ids, _answer_weights()))
    method.reset()
    logprobs = method.score(ids)  # log p of tokens 1..T-1
    assert loss == pytest.approx(float(-logprobs[ANSWER - 1 :].mean()), rel=1e-5)


@pytest.mark.parametrize(("name", "train_options"), STRATEGIES)
def test_a_prompt_tokens_label_sends_no_gradient(name, train_options, tiny_llama):
    method = _method(name, tiny_llama, train_options)
    ids = _ids()
    relabelled = ids.clone()
    relabelled[5:ANSWER] = (ids[5:ANSWER] + 7) % 250  # other labels for prompt tokens; the inputs stay
    _, answer = _backward(method, ids, TokenLoss(ids, _answer_weights()))
    _, answer_relabelled = _backward(method, ids, TokenLoss(relabelled, _answer_weights()))
    for grad, other in zip(answer, answer_relabelled, strict=True):
        torch.testing.assert_close(grad, other, rtol=0, atol=0)
    assert any(grad.abs().sum() > 0 for grad in answer)
    # Control: when every token counts, the same relabelling does change the gradient.
    every = torch.ones(LENGTH)
    every[0] = 0
    _, all_tokens = _backward(method, ids, TokenLoss(ids, every))
    _, all_relabelled = _backward(method, ids, TokenLoss(relabelled, every))
    assert any(not torch.equal(grad, other) for grad, other in zip(all_tokens, all_relabelled, strict=True))


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_token_weights_give_the_official_loss(name, tiny_llama):
    """RMT and LongLoRA: the official loss is the mean NLL of every prediction; UIO: on the same weights,
    its value is the weighted mean whatever its strategy (the official UIO loss is per-segment means)."""
    method = _method(name, tiny_llama)
    ids = _ids(64)
    every = torch.ones(64)
    every[0] = 0
    loss, _ = _backward(method, ids, TokenLoss(ids, every))
    method.reset()
    assert loss == pytest.approx(float(-method.score(ids).mean()), rel=1e-5)
    if name != "uio":
        official, _ = _backward(method, ids, None)
        assert official == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize("strategy", ["tbptt", "incremental", "unbiased"])
def test_uio_strategies_with_a_window_past_the_document_give_the_exact_answer_gradient(strategy, tiny_llama):
    """With every memory inside the window, truncation cuts nothing: each strategy is full backpropagation."""
    ids = _ids()
    _, exact = _backward(_method("uio", tiny_llama, {"strategy": "bptt"}), ids, TokenLoss(ids, _answer_weights()))
    method = _method("uio", tiny_llama, {"strategy": strategy, "window": 4})
    _, grads = _backward(method, ids, TokenLoss(ids, _answer_weights()))
    for grad, other in zip(exact, grads, strict=True):
        torch.testing.assert_close(grad, other, rtol=1e-4, atol=1e-7)


def test_distilling_a_student_equal_to_its_teacher_costs_nothing(tiny_llama):
    """UIO on one segment: its decoder is the frozen base and reads no memory, so it is the teacher."""
    method = _method("uio", tiny_llama)
    ids = _ids(12)
    every = torch.ones(12)
    every[0] = 0
    loss, grads = _backward(method, ids, TokenLoss(ids, every, teacher_logprobs(method.model, ids)))
    assert abs(loss) < 1e-6
    assert all(torch.count_nonzero(grad) == 0 for grad in grads)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_distillation_moves_a_student_that_differs(name, tiny_llama):
    """The control of the test above: past its first segment a memory method is not its teacher."""
    method = _method(name, tiny_llama)
    ids = _ids()
    every = torch.ones(LENGTH)
    every[0] = 0
    loss, grads = _backward(method, ids, TokenLoss(ids, every, teacher_logprobs(method.model, ids)))
    assert loss > 1e-4
    assert any(grad.abs().sum() > 0 for grad in grads)


def _spec(**overrides):
    fields = {"method": "rmt", "data": "x.jsonl", "steps": 1, "seq_len": 64, "out": "o"}
    return TrainSpec(**(fields | overrides))


def test_document_loss_follows_the_spec(tiny_llama):
    model = tiny_llama[0]
    example = Example(_ids(20), answer=15)
    assert document_loss(_spec(), example, model) is None  # the method's official loss
    records = {"prompt_field": "prompt", "answer_field": "answer"}
    answer = document_loss(_spec(loss="answer", **records), example, model)
    assert answer.weights.tolist() == [0.0] * 15 + [1.0] * 5 and answer.teacher is None
    distill = document_loss(_spec(objective="distill"), example, model)
    assert distill.weights.tolist() == [0.0] + [1.0] * 19
    assert distill.teacher.shape == (20, model.config.vocab_size)
    torch.testing.assert_close(distill.teacher[1:].exp().sum(-1), torch.ones(19))


def test_the_teacher_reads_inside_its_window(tiny_llama):
    model = tiny_llama[0]
    window = model.config.max_position_embeddings
    check_teacher_window(_spec(seq_len=window, objective="distill"), model)
    with pytest.raises(UserError, match="--objective distill: .* past the teacher's trained window"):
        check_teacher_window(_spec(seq_len=window + 1, objective="distill"), model)
    with pytest.raises(UserError, match="--loss long: .* past the teacher's trained window"):
        check_teacher_window(_spec(seq_len=window + 1, loss="long"), model)


def test_long_context_tokens_need_a_method_with_segments(tmp_path, capsys):
    from harness.cli import main

    data = tmp_path / "books"
    data.mkdir()
    (data / "1342_a.txt").write_text("a book " * 100)
    argv = ["train", "longlora", "--model", "tiny-random-llama", "--data", str(data), "--loss", "long",
            "--steps", "1", "--seq-len", "64", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    assert "--loss long needs a method with segments (uio, rmt); longlora has none" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss": "answer"}, "--loss answer needs records"),
        ({"prompt_field": "prompt"}, "give --prompt-field and --answer-field together"),
        (
            {
                "prompt_field": "p",
                "answer_field": "a",
                "steps": None,
                "seq_len": None,
                "stages": [{"seq_len": 64, "steps": 1, "lengths": [32, 64]}],
            },
            "records are used whole",
        ),  # fmt: skip
        ({"steps": None, "seq_len": None, "stages": [{"seq_len": 64, "steps": 1, "lengths": [32, 48]}]}, "longest"),
    ],
)
def test_inconsistent_objectives_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        _spec(**overrides)


def test_token_loss_refuses_a_weight_on_the_first_token():
    with pytest.raises(ValueError, match="weights\\[0\\] == 0"):
        TokenLoss(_ids(4), torch.ones(4))


def test_long_context_tokens_are_those_the_whole_document_makes_likely(tiny_llama):
    """LongPPL's key tokens: a teacher sure of a token its segment alone does not predict; never in segment 0."""
    model = tiny_llama[0]
    ids = _ids(48)
    teacher = teacher_logprobs(model, ids)
    assert not long_context_tokens(model, ids, teacher, 16).any()  # a random model: context changes little
    for position in (5, 40):  # made certain by the "whole document", in the first segment and in the third
        teacher[position] = torch.log_softmax(torch.nn.functional.one_hot(ids[position], 258).float() * 30, -1)
    assert long_context_tokens(model, ids, teacher, 16).nonzero().flatten().tolist() == [40]
