"""Registers the lm-eval model `lch` whenever lm-eval loads its models, so `lm_eval --model lch` works.

lm-eval (0.4.x) has no plugin entry points: its CLI only knows models registered by modules it has
imported. lch installs `lch_lm_eval.pth`, which runs `install()` at interpreter start-up; that puts a
finder on `sys.meta_path` which does nothing until `lm_eval.models` is imported, then registers `lch`
as a lazy `module:Class` target (the adapter, and torch, load only when `--model lch` is asked for).
Registering after `lm_eval.models` matters: lm-eval imports its own models only into an empty registry.
"""

from __future__ import annotations

import importlib.abc
import sys

WATCHED = "lm_eval.models"
TARGET = "harness.lm_eval.adapter:LchLM"


def register() -> None:
    """Register `lch` in lm-eval's model registry (idempotent)."""
    from lm_eval.api.registry import model_registry

    if "lch" not in model_registry:
        model_registry.register("lch", target=TARGET)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Wraps the loader of `lm_eval.models` so that `register()` runs right after the module executes."""

    def find_spec(self, fullname, path, target=None):
        if fullname != WATCHED:
            return None
        sys.meta_path.remove(self)  # find the real spec with the other finders, once
        try:
            from importlib.util import find_spec

            spec = find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            register()

        spec.loader.exec_module = exec_then_register
        return spec


def install() -> None:
    """Called from `lch_lm_eval.pth`; cheap, and never breaks interpreter start-up."""
    if WATCHED in sys.modules:
        register()
    elif not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
