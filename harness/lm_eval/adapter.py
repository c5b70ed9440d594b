"""`LchLM`: any lch method as an lm-evaluation-harness model (`lm_eval --model lch`).

A thin `TemplateLM` (lm-eval's `LM` with its tokenisation boilerplate), not an `HFLM` subclass: every
request goes through the method's own contract (`score`, `prefill`, `decode`), one request at a time,
with the method's state reset before each, so memory methods read a whole document instead of the
batches, left padding and left truncation HFLM applies.

Requests, and how they differ from lm-eval's `hf` model:

* `loglikelihood`: the sum of the continuation's log-probs from one `score()` over context +
  continuation, tokenised exactly as HFLM does (`TemplateLM._encode_pair`, BOS as prefix for an empty
  context); `is_greedy` says whether each continuation token is the argmax of the same logits, as
  HFLM computes it.
* `loglikelihood_rolling`: the whole document in one `score()` after the prefix token, so a method
  carries its state across the document; HFLM instead scores disjoint windows of `max_length`
  tokens. Both give the same number when the document fits the window.
* `generate_until`: prefill + greedy decode up to `max_gen_toks`, stopping on the model's EOS ids or
  when a stop string appears; the text is cut at the stop strings as HFLM cuts it. Sampling
  (`do_sample: true`) is refused: every lch method decodes greedily.
* The state is reset before each request and kept after it (the runner reads its size, then resets).
* `--apply_chat_template` uses the tokenizer's own chat template, as HFLM does (dropping system
  messages when the template rejects them); a tokenizer without one is a one-line error.
* Nothing is truncated. A request longer than the method's `max_context` follows the method's policy
  (`InputTooLong`): it is answered with an empty generation or `-inf`, and counted in `over_length`.
"""

from __future__ import annotations

import math
from typing import Any

import jinja2
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from harness.checkpoints import method_config
from harness.core.errors import UserError
from harness.models import DEFAULT_MODEL, load_model
from methods.base import METHODS, InputTooLong, LongContextModel

DEFAULT_MAX_GEN_TOKS = 256  # HFLM's default


class LchLM(TemplateLM):
    """An lch method (already applied to a loaded model) answering lm-eval requests one at a time.

    Build it from lm-eval's `--model_args` (`model=...,method=...,<method option>=...`) or, inside lch,
    with `LchLM.wrap(method)` around a method the runner meters.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        method: str = "full",
        dtype: str = "float32",
        device: str = "cpu",
        tokenizer: str | None = None,
        batch_size: Any = 1,
        max_batch_size: Any = None,
        **method_options: Any,
    ):
        """Load `model`, apply `method` with `method_options` (its config fields) and serve requests.

        Args:
            model: an lch model alias (`lch list`), a local directory or a hub id.
            method: a registered lch method.
            dtype: `float32`, `bfloat16` or `float16`.
            device: `cpu`, `cuda`, `cuda:N` or `auto`.
            tokenizer: ignored by the model (it always uses its own tokenizer); lm-eval hands it to
                synthetic tasks such as RULER, which build their data with a tokenizer found by name.
            batch_size: accepted for lm-eval's CLI; requests always run one at a time.
            max_batch_size: accepted for lm-eval's CLI and ignored.
            **method_options: fields of the method's config, e.g. `n_local=2048`.
        """
        super().__init__()
        try:
            cls = METHODS.get(method)
            where = f"method '{method}'"
            config = method_config(cls, method_options, where)
            model_obj, tokenizer_obj = load_model(model, dtype, "auto" if device is None else _lch_device(device))
            self._init(cls(model_obj, tokenizer_obj, config))
        except UserError as error:
            # lm-eval reports its own bad --model / --model_args as a ValueError with a one-line message
            # (lm_eval/api/registry.py::get_model); lch's bad arguments read the same, without lch's frames.
            raise ValueError(" ".join(str(error).splitlines())) from None

    @classmethod
    def wrap(cls, method: LongContextModel) -> LchLM:
        """An adapter around an existing method (or a `Metered` proxy of one), without loading anything."""
        self = cls.__new__(cls)
        TemplateLM.__init__(self)
        self._init(method)
        return self

    def _init(self, method) -> None:
        self.method = method
        self.tokenizer = method.tokenizer
        eos = method.model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.stop_ids = sorted({i for i in [*eos_ids, self.tokenizer.eos_token_id] if i is not None})
        self.over_length = 0
        self.decoded_tokens = 0

    @property
    def eot_token_id(self) -> int:
        """End of text: the tokenizer's EOS, as HFLM uses it."""
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context is replaced by: BOS, else EOS (HFLM's rule)."""
        return _prefix_token_id(self.tokenizer)

    @property
    def tokenizer_name(self) -> str:
        """Names the tokenizer in lm-eval's results."""
        return str(self.tokenizer.name_or_path).replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The few-shot history as one prompt in the tokenizer's chat template (HFLM's rule)."""
        return chat_prompt(self.tokenizer, chat_history, add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """Token ids as HFLM encodes them (the tokenizer's own special-token default, no double BOS)."""
        return hf_encode(self.tokenizer, string, add_special_tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        results = []
        for (context, continuation), context_enc, continuation_enc in tqdm(requests, disable=disable_tqdm):
            try:
                answer = self._continuation_logprob(context_enc, continuation_enc)
            except InputTooLong:
                self.over_length += 1
                answer = (-math.inf, False)
            results.append(answer)
            self.cache_hook.add_partial("loglikelihood", (context, continuation), answer)
        return results

    def _continuation_logprob(self, context_enc: list[int], continuation_enc: list[int]) -> tuple[float, bool]:
        self.method.reset()
        logprobs, greedy = self.method.score(torch.tensor(context_enc + continuation_enc), greedy=True)
        wanted = slice(len(context_enc) - 1, None)
        return float(logprobs[wanted].sum()), bool(greedy[wanted].all())

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole document after the prefix token, in one `score()` per document."""
        results = []
        for (string,) in tqdm([request.args for request in requests], disable=disable_tqdm):
            ids = [self.prefix_token_id, *self.tok_encode(string, add_special_tokens=False)]
            self.method.reset()
            try:
                total = float(self.method.score(torch.tensor(ids)).sum())
            except InputTooLong:
                self.over_length += 1
                total = -math.inf
            results.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy generation per request, cut at the first stop string (HFLM's post-processing)."""
        results = []
        eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        for context, gen_kwargs in tqdm([request.args for request in requests], disable=disable_tqdm):
            options = normalize_gen_kwargs(gen_kwargs, DEFAULT_MAX_GEN_TOKS)
            if options.get("do_sample"):
                raise UserError("lch methods decode greedily; this task asks for sampling (do_sample: true)")
            until = handle_stop_sequences(options.get("until"), eos=eos)
            try:
                text = self._generate(self.tok_encode(context), options["max_gen_toks"], until)
            except InputTooLong:
                self.over_length += 1
                text = ""
            results.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return results

    def _generate(self, context_enc: list[int], max_gen_toks: int, until: list[str]) -> str:
        self.method.reset()
        self.method.prefill(torch.tensor(context_enc))
        tokens: list[int] = []
        # One token per call so a stop string ends generation as soon as it appears, as HF's criteria do.
        while len(tokens) < max_gen_toks:
            tokens += self.method.decode(1, stop_ids=self.stop_ids)
            self.decoded_tokens += 1
            if tokens[-1] in self.stop_ids:
                break
            if any(stop and stop in self.tokenizer.decode(tokens) for stop in until):
                break
        return postprocess_generated_text(self.tokenizer.decode(tokens, skip_special_tokens=True), until, None)


def _prefix_token_id(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def hf_encode(tokenizer, string: str, add_special_tokens: bool | None = None) -> list[int]:
    """Token ids as HFLM encodes them (the tokenizer's own special-token default, no double BOS)."""
    if add_special_tokens is None and has_bos_prefix(string, tokenizer.decode(_prefix_token_id(tokenizer))):
        add_special_tokens = False
    options = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    return tokenizer.encode(string, **options)


def chat_prompt(tokenizer, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """`chat_history` in `tokenizer`'s chat template, as lm-eval's `hf` model applies it."""
    if not tokenizer.chat_template:
        name = tokenizer.name_or_path
        raise UserError(f"tokenizer '{name}' has no chat template; run without --apply_chat_template")
    options = dict(tokenize=False, add_generation_prompt=add_generation_prompt)
    options["continue_final_message"] = not add_generation_prompt
    try:
        return tokenizer.apply_chat_template(chat_history, **options)
    except jinja2.exceptions.TemplateError:
        # Templates without a system role raise; HFLM then drops the system messages and retries.
        return tokenizer.apply_chat_template([m for m in chat_history if m["role"] != "system"], **options)


def _lch_device(device: str) -> str:
    """lm-eval's CLI passes `cuda:0` by default; on a machine without CUDA that means the CPU."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    return device
