"""The lm-eval model `lch` against lm-eval's own `hf` model on the same tiny weights, and through RULER."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from harness.lm_eval.adapter import LchLM  # noqa: E402


@pytest.fixture(scope="module")
def ours(tiny_dir):
    return LchLM(model=tiny_dir, method="full")


@pytest.fixture(scope="module")
def theirs(tiny_dir):
    return HFLM(pretrained=tiny_dir, dtype="float32", device="cpu", batch_size=1, max_length=2048)


def requests(kind, args):
    return [Instance(kind, {}, arguments, idx, ("hand", idx, 1)) for idx, arguments in enumerate(args)]


def greedy_ids(tiny_llama, prompt, n):
    model, tokenizer = tiny_llama
    ids = torch.tensor([tokenizer.encode(prompt)])
    out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return out[0, ids.shape[1] :].tolist()


def greedy_text(tiny_llama, prompt, n):
    return tiny_llama[1].decode(greedy_ids(tiny_llama, prompt, n))


def greedy_pair(tiny_llama, n=2):
    """A prompt whose greedy continuation survives decode -> encode (random bytes often are not UTF-8)."""
    tokenizer = tiny_llama[1]
    for k in range(200):
        prompt = f"Prompt number {k}:"
        ids = greedy_ids(tiny_llama, prompt, n)
        text = tokenizer.decode(ids)
        if tokenizer.encode(prompt + text) == tokenizer.encode(prompt) + ids:
            return prompt, text
    raise AssertionError("no prompt with a round-tripping greedy continuation")


def test_loglikelihood_equals_hf(ours, theirs, tiny_llama):
    prompt, greedy = greedy_pair(tiny_llama)
    pairs = [
        ("The capital of France is", " Paris."),
        ("Question: 2 + 2 = ", "4"),  # the trailing space moves into the continuation
        ("", "An empty context is replaced by BOS."),
        (prompt, greedy),  # greedy by construction
        ("x" * 700, " and a long context"),
    ]
    got = ours.loglikelihood(requests("loglikelihood", pairs), disable_tqdm=True)
    want = theirs.loglikelihood(requests("loglikelihood", pairs), disable_tqdm=True)
    for (logprob, is_greedy), (ref_logprob, ref_greedy) in zip(got, want, strict=True):
        assert math.isclose(logprob, ref_logprob, rel_tol=0, abs_tol=1e-3)
        assert is_greedy == ref_greedy
    assert got[3][1] is True and got[0][1] is False
    assert ours.over_length == 0


def test_loglikelihood_rolling_equals_hf_within_the_window(ours, theirs):
    docs = [("A short document about nothing in particular.",), ("Another one, " * 40,)]
    got = ours.loglikelihood_rolling(requests("loglikelihood_rolling", docs), disable_tqdm=True)
    want = theirs.loglikelihood_rolling(requests("loglikelihood_rolling", docs), disable_tqdm=True)
    for logprob, ref in zip(got, want, strict=True):
        assert math.isclose(logprob, ref, rel_tol=0, abs_tol=1e-3)


def test_generate_until_cuts_at_stop_strings_like_hf(ours, theirs, tiny_llama):
    # A prompt whose greedy continuation starts with 4 ASCII bytes, so tokens 3-4 make a clean stop string.
    candidates = ((p, greedy_ids(tiny_llama, p, 12)) for p in (f"Story {k}:" for k in range(500)))
    prompt, ids = next((p, ids) for p, ids in candidates if all(i < 128 for i in ids[:4]))
    stop = tiny_llama[1].decode(ids[2:4])
    args = [(prompt, {"until": [stop], "max_gen_toks": 12}), (prompt, {"until": [], "max_gen_toks": 7})]
    got = ours.generate_until(requests("generate_until", args), disable_tqdm=True)
    assert got == theirs.generate_until(requests("generate_until", args), disable_tqdm=True)
    assert got[0] == tiny_llama[1].decode(ids).split(stop)[0] and len(got[0]) <= 2
    assert got[1] == tiny_llama[1].decode(ids[:7])


def test_sampling_is_refused(ours):
    from harness.core.errors import UserError

    with pytest.raises(UserError, match="greedily"):
        ours.generate_until(requests("generate_until", [("hi", {"do_sample": True, "temperature": 1.0})]))


def test_a_bad_method_option_is_one_line_naming_it(tiny_dir):
    # lm-eval's own bad --model_args surface as a ValueError (tests/unit/test_lm_eval_bad_args.py)
    with pytest.raises(ValueError, match="method 'streaming': unknown option 'windw'. Valid: n_sink, window"):
        LchLM(model=tiny_dir, method="streaming", windw=3)


def test_over_length_requests_are_counted_not_truncated(tiny_llama):
    from methods.base import METHODS

    model, tokenizer = tiny_llama
    method = METHODS.get("full")(model, tokenizer, METHODS.get("full").Config())
    method.max_context = 100
    adapter = LchLM.wrap(method)
    out = adapter.generate_until(requests("generate_until", [("y" * 150, {"until": [], "max_gen_toks": 3})]))
    assert out == [""] and adapter.over_length == 1
    assert adapter.loglikelihood_rolling(requests("loglikelihood_rolling", [("z" * 150,)])) == [-math.inf]
    assert adapter.over_length == 2


def test_ruler_niah_through_the_adapter_matches_hf(ours, theirs, tiny_dir):
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(metadata={"tokenizer": tiny_dir, "max_seq_lengths": [1024]})
    tasks = get_task_dict(["niah_single_1"], manager)  # generated once (RULER builds 500 samples per length)
    got, want = (evaluate(lm, tasks, limit=2, log_samples=True, bootstrap_iters=0) for lm in (ours, theirs))
    samples = got["samples"]["niah_single_1"]
    assert [s["doc"]["max_length"] for s in samples] == [1024, 1024]
    assert [s["resps"] for s in samples] == [s["resps"] for s in want["samples"]["niah_single_1"]]
    assert [s["1024"] for s in samples] == [s["1024"] for s in want["samples"]["niah_single_1"]]


def test_chat_template_prompts_and_answers_equal_hf(tiny_chat_dir):
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager, get_task_dict

    from harness.lm_eval import TASKS_DIR

    ours = LchLM(model=tiny_chat_dir, method="full")
    theirs = HFLM(pretrained=tiny_chat_dir, dtype="float32", device="cpu", batch_size=1, max_length=2048)
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    for prompt in (True, False):
        assert ours.apply_chat_template(history, prompt) == theirs.apply_chat_template(history, prompt)
    metadata = {"tokenizer": tiny_chat_dir, "max_seq_lengths": [300], "samples": 2}
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)
    tasks = get_task_dict(["lch_passkey"], manager)
    options = dict(log_samples=True, bootstrap_iters=0, apply_chat_template=True, system_instruction="Be brief.")
    got, want = (evaluate(lm, tasks, **options)["samples"]["lch_passkey"] for lm in (ours, theirs))
    prompts = [s["arguments"][0][0] for s in got]
    assert all(p.startswith("<|user|>") and p.endswith("<|assistant|>") for p in prompts)
    assert prompts == [s["arguments"][0][0] for s in want]
    assert [s["resps"] for s in got] == [s["resps"] for s in want]


def test_chat_template_without_one_is_a_one_line_error(ours):
    from harness.core.errors import UserError

    with pytest.raises(UserError, match="has no chat template; run without --apply_chat_template"):
        ours.apply_chat_template([{"role": "user", "content": "Hi"}])


def test_lm_eval_cli_knows_the_lch_model():
    code = "from lm_eval.api.registry import get_model; print(get_model('lch').__name__, get_model('hf').__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["LchLM", "HFLM"]


def test_prompts_are_encoded_without_a_double_bos():
    """HFLM's rule, shared by the adapter and the sweep's instances: text that starts with BOS gets no second one."""
    from tokenizers.processors import TemplateProcessing

    from harness.lm_eval.adapter import hf_encode
    from harness.models import byte_tokenizer

    tokenizer = byte_tokenizer()
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    hi = tokenizer.encode("hi", add_special_tokens=False)
    assert tokenizer.encode("<bos>hi") == [bos, bos, *hi]
    assert hf_encode(tokenizer, "<bos>hi") == [bos, *hi]
    assert hf_encode(tokenizer, "hi") == [bos, *hi]
