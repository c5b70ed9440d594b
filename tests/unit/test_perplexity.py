from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from harness.core.errors import UserError
from methods.base import METHODS
from tasks import token_nll
from tasks.base import TASKS, Score
from tasks.perplexity import Perplexity, PerplexityConfig, position_curve, windows

# Byte-level tokenizer of the tiny model: one token per byte, no BOS added by default.
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "wizards", "hex", "clerk"]


def _text(n_chars: int, seed: int) -> str:
    rng = torch.Generator().manual_seed(seed)
    words = [WORDS[int(i)] for i in torch.randint(len(WORDS), (n_chars // 3,), generator=rng)]
    return " ".join(words)[:n_chars]


@pytest.fixture()
def books(tmp_path):
    """A data dir with 3 PG19-test-named books (one short) and one other book, Gutenberg-wrapped."""
    folder = tmp_path / "books"
    folder.mkdir()
    sizes = {"2544_c": 700, "10146_a": 600, "10321_short": 100, "145_other": 900}
    for seed, (stem, size) in enumerate(sizes.items()):
        text = f"head\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n{_text(size, seed)}\n*** END OF IT ***\nlicence"
        (folder / f"{stem}.txt").write_text(text.replace("\n", "\r\n"))
    return tmp_path


@pytest.fixture()
def full(tiny_llama):
    model, tokenizer = tiny_llama
    cls = METHODS.get("full")
    return cls(model, tokenizer, cls.Config(chunk_size=64)), tokenizer


def _task(tokenizer, books, **options) -> Perplexity:
    return Perplexity(PerplexityConfig(data_dir=str(books), **options), tokenizer)


def _run(task, method, instance) -> Score:
    method.reset()
    return task.evaluate(method, instance)


def test_registered():
    assert TASKS.get("perplexity") is Perplexity
    assert Perplexity.headline == "perplexity" and not Perplexity.higher_is_better


def test_windows_hand_count():
    # window 8, stride 3 over 20 tokens: first window predicts 1..8, then 3 new tokens a window.
    assert list(windows(20, 8, 3)) == [(0, 9, 8), (3, 12, 3), (6, 15, 3), (9, 18, 3), (11, 20, 2)]
    # disjoint (lm-eval rolling, context_len=1): 8 predicted tokens a window; the last is left-extended.
    assert list(windows(20, 8, None)) == [(0, 9, 8), (8, 17, 8), (11, 20, 3)]
    assert list(windows(20, None, None)) == [(0, 20, 19)]


@pytest.mark.parametrize("length", [2, 9, 10, 57])
@pytest.mark.parametrize(("window", "stride"), [(8, 1), (8, 3), (8, 8), (1, 1), (30, 7)])
def test_windows_score_every_token_once(length, window, stride):
    covered = []
    for begin, end, new in windows(length, window, stride):
        assert 0 <= begin < end <= length and end - begin <= window + 1 and 1 <= new <= end - begin - 1
        covered.extend(range(end - new, end))
    assert covered == list(range(1, length))


def test_config_validation():
    with pytest.raises(ValidationError, match="stride"):
        PerplexityConfig(protocol="sliding", window=8)
    with pytest.raises(ValidationError, match="stride"):
        PerplexityConfig(protocol="sliding", window=8, stride=9)
    with pytest.raises(ValidationError, match="window"):
        PerplexityConfig(protocol="disjoint")
    with pytest.raises(ValidationError, match="segment"):
        PerplexityConfig(window=8)
    assert PerplexityConfig(documents=2544).documents == "2544"


def test_instances_truncate_skip_and_count(full, books):
    _, tokenizer = full
    task = _task(tokenizer, books)
    with pytest.warns(UserWarning, match="only 2 of 5"):
        instances = task.instances(500, 5, seed=0)
    # PG19 file order (ids as strings): 10146, 10321 (100 chars, skipped), 2544; 145 is not a test book.
    assert [i.metadata["document"] for i in instances] == ["10146_a", "2544_c"]
    assert [i.metadata["skipped_before"] for i in instances] == [0, 1]
    assert all(len(i.input_ids) == 500 and i.metadata["chars"] == 500 for i in instances)
    assert instances[0].input_ids == tokenizer(_text(600, 1), add_special_tokens=False).input_ids[:500]
    assert task.instances(500, 1, seed=3)[0].input_ids == instances[0].input_ids  # sample 0 does not depend on n


def test_documents_option(full, books):
    _, tokenizer = full
    stems = lambda **o: [i.metadata["document"] for i in _task(tokenizer, books, **o).instances(50, 9, 0)]  # noqa: E731
    with pytest.warns(UserWarning):
        assert stems(documents="all") == ["10146_a", "10321_short", "145_other", "2544_c"]
        assert stems(documents=["145_other", "2544"]) == ["145_other", "2544_c"]
    with pytest.raises(UserError, match="no book"):
        stems(documents=["999"])


def test_bos_is_prepended_and_counted(full, books):
    _, tokenizer = full

    class WithBos:
        bos_token_id = 257

        def __call__(self, text, add_special_tokens=True):
            ids = tokenizer(text, add_special_tokens=False).input_ids
            return types.SimpleNamespace(input_ids=([257] if add_special_tokens else []) + ids)

        def decode(self, ids):
            return tokenizer.decode(ids)

    instance = Perplexity(PerplexityConfig(data_dir=str(books)), WithBos()).instances(100, 1, 0)[0]
    assert len(instance.input_ids) == 100 and instance.input_ids[0] == 257 and instance.metadata["chars"] == 99


@pytest.mark.parametrize(
    "options", [{}, {"protocol": "sliding", "window": 100, "stride": 30}, {"protocol": "disjoint", "window": 64}]
)
def test_every_protocol_scores_length_minus_one_tokens(full, books, options):
    method, tokenizer = full
    task = _task(tokenizer, books, bucket=128, **options)
    instance = task.instances(300, 1, 0)[0]
    score = _run(task, method, instance)
    assert score.metrics["tokens"] == 299
    assert score.score == pytest.approx(math.exp(score.metrics["nll_sum"] / 299))
    curve = score.details["position_nll"]
    assert curve["tokens"] == [127, 128, 44]  # positions 1..127, 128..255, 256..299
    assert sum(curve["tokens"]) == score.metrics["tokens"]
    assert sum(curve["nll_sum"]) == pytest.approx(score.metrics["nll_sum"])
    per_token = token_nll.decode(score.details["token_nll"])  # float16: 11 significant bits
    assert per_token.size == 299 and per_token.sum() == pytest.approx(score.metrics["nll_sum"], rel=1e-3)
    assert per_token[127:255].sum() == pytest.approx(curve["nll_sum"][1], rel=1e-3)  # positions 128..255


def test_segment_matches_plain_transformers(full, books, tiny_llama):
    method, tokenizer = full
    model, _ = tiny_llama
    task = _task(tokenizer, books)
    instance = task.instances(300, 1, 0)[0]
    score = _run(task, method, instance)
    ids = torch.tensor(instance.input_ids)[None]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits.float(), dim=-1)[0, :-1]
    reference = -logprobs.gather(-1, ids[0, 1:, None]).double().sum()
    assert abs(score.metrics["nll_sum"] / 299 - float(reference) / 299) <= 1e-4
    assert abs(score.metrics["nll_sum"] - float(reference)) <= 1e-2


def test_sliding_stride_equal_window_is_disjoint_and_resets(full, books):
    method, tokenizer = full
    resets = []

    class Counting:
        causal_score = True

        def reset(self):
            resets.append(1)
            method.reset()

        def score(self, ids):
            assert ids.numel() <= 65
            return method.score(ids)

    instance = _task(tokenizer, books).instances(300, 1, 0)[0]
    sliding = _task(tokenizer, books, protocol="sliding", window=64, stride=64).evaluate(Counting(), instance)
    assert len(resets) == 5  # windows predicting 1..64, 65..128, 129..192, 193..256, 257..299
    disjoint = _task(tokenizer, books, protocol="disjoint", window=64).evaluate(Counting(), instance)
    segment = _run(_task(tokenizer, books), method, instance)
    assert sliding.metrics == disjoint.metrics
    assert sliding.metrics["nll_sum"] != segment.metrics["nll_sum"]  # windows really cut the context


def test_aggregate_token_weighted_curve_and_skips():
    def score(nll, tokens, curve, skipped):
        ppl = math.exp(nll / tokens)
        details = {"position_nll": {"bucket": 10, "nll_sum": curve[0], "tokens": curve[1]}, "skipped_before": skipped}
        return Score(score=ppl, metrics={"perplexity": ppl, "nll_sum": nll, "tokens": tokens}, details=details)

    scores = [score(20.0, 10, ([18.0, 2.0], [9, 1]), 0), score(90.0, 30, ([20.0, 30.0, 40.0], [9, 10, 11]), 2)]
    out = Perplexity.aggregate(None, scores)
    assert out["perplexity"] == pytest.approx(math.exp(110 / 40))
    assert out["mean_document_perplexity"] == pytest.approx((math.exp(2.0) + math.exp(3.0)) / 2)
    assert (out["tokens"], out["documents"], out["skipped_documents"]) == (40, 2, 2)
    assert out["nll@0"] == pytest.approx(38 / 18) and out["nll@10"] == pytest.approx(32 / 11)
    assert out["nll@20"] == pytest.approx(40 / 11)


def test_token_nll_round_trips_within_float16():
    nll = np.array([0.0, 0.001, 2.5, 10.0, 31.7])
    back = token_nll.decode(token_nll.encode(nll))
    assert back.dtype == np.float64 and back == pytest.approx(nll, rel=2**-11, abs=1e-6)
    assert len(token_nll.encode(np.zeros(100_000))) == 266_668  # 2 bytes a token, base64


def test_position_curve_buckets_by_document_position():
    curve = position_curve(torch.ones(9, dtype=torch.float64), bucket=4)  # positions 1..9
    assert curve == {"bucket": 4, "nll_sum": [3.0, 4.0, 2.0], "tokens": [3, 4, 2]}


def test_missing_books_and_hub_failure_are_one_line(tmp_path, monkeypatch, full):
    _, tokenizer = full
    with pytest.raises(UserError, match="no books"):
        _task(tokenizer, tmp_path).instances(10, 1, 0)
    monkeypatch.setattr("tasks.perplexity.data_dir", lambda option: None)

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host\nlong traceback text")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(UserError, match="deepmind/pg19 test from the hub failed: no route to host$"):
        Perplexity(PerplexityConfig(), tokenizer).instances(10, 1, 0)
    rows = [{"book_id": "7", "text": "short"}, {"book_id": "8", "text": _text(200, 0)}]
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a, **k: iter(rows)))
    instance = Perplexity(PerplexityConfig(), tokenizer).instances(50, 1, 0)[0]
    assert instance.metadata["document"] == "8" and instance.metadata["skipped_before"] == 1


def test_lookahead_scoring_is_refused_unless_allowed(tiny_llama, books):
    infllm = METHODS.get("infllm")
    method = infllm(*tiny_llama, infllm.Config(n_local=64, exc_block_size=32, block_size=16, score_lookahead=True))
    instance = _task(tiny_llama[1], books).instances(200, 1, 0)[0]
    with pytest.raises(UserError, match="allow_noncausal=true"):
        _run(_task(tiny_llama[1], books), method, instance)
    assert _run(_task(tiny_llama[1], books, allow_noncausal=True), method, instance).metrics["tokens"] == 199
