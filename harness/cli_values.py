"""Flag values of the `lch` command line: `K=V` options, integer lists, stages, method and generator flags.

Each parser turns a malformed value into a one-line `UserError` that names the flag.
"""

from __future__ import annotations

from typing import Any

import yaml

from harness.core.errors import UserError


def options(pairs: list[str], what: str) -> dict[str, Any]:
    """`["k=v", ...]` -> dict; values are read as YAML scalars, and `a,b` as a list."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{what} '{pair}' must look like key=value")
        if not value.strip():
            raise UserError(f"{what} '{pair}' has no value (leave the option out for its default)")
        try:
            parsed = [yaml.safe_load(v) for v in value.split(",") if v] if "," in value else yaml.safe_load(value)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise UserError(f"{what} '{pair}': the value is not a YAML scalar or a,b list ({problem})") from None
        options[key.strip()] = parsed
    return options


def ints(text: str, flag: str, least: int = 1) -> list[int]:  # least: 1 or 0
    """`"1024,4096"` -> `[1024, 4096]`; an empty item, a non-integer or a value below `least` is a one-line error."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < least:
        kind = "positive" if least > 0 else "non-negative"
        raise UserError(f"{flag} must be comma-separated {kind} integers, got '{text}'")
    return values


def steps(text: str) -> list[int]:
    """`"600,1200"` -> `[600, 1200]`; anything else is a one-line error."""
    try:
        chosen = [int(value) for value in text.split(",")]
    except ValueError:
        raise UserError(f"--keep-at must be steps separated by commas (e.g. 300,600), got '{text}'") from None
    if min(chosen) < 1:
        raise UserError(f"--keep-at steps must be positive, got '{text}'")
    return chosen


def stages(text: str) -> list[dict[str, Any]]:
    """`"4096:60,1024/2048:20"` -> stages (a set of lengths as `lengths`); anything else is a one-line error.

    E.g. `[{"seq_len": 4096, "steps": 60}, {"seq_len": 2048, "steps": 20, "lengths": [1024, 2048]}]`.
    """
    plan = []
    for item in text.split(","):
        length, _, count_text = item.partition(":")
        try:
            lengths, count = [int(value) for value in length.split("/")], int(count_text)
        except ValueError:
            raise UserError(
                f"--stages must look like LEN:STEPS,LEN/LEN:STEPS (e.g. 4096:60,1024/2048:20), got '{text}'"
            ) from None
        if min(*lengths, count) < 1:
            raise UserError(f"--stages lengths and steps must be positive, got '{item}'")
        stage = {"seq_len": max(lengths), "steps": count}
        if len(set(lengths)) > 1:
            stage["lengths"] = sorted(set(lengths))
        plan.append(stage)
    return plan


def positive(value: int, flag: str) -> int:
    """`value`, or a one-line error naming `flag` when it is below 1."""
    if value < 1:
        raise UserError(f"{flag} must be a positive integer, got {value}")
    return value


METHOD_OBJECTIVES = ("autoencode",)  # objectives a method defines in its train config (`objective`)


def extra_options(extra: list[str], method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--name value` flags beyond lch's own, routed to the method's train config, else to its config."""
    from harness.training import trainable_class

    cls = trainable_class(method)
    train_fields = list(cls.TrainConfig.model_fields)
    method_options, train_options = {}, {}
    flags = iter(extra)
    for flag in flags:
        name = flag.removeprefix("--").replace("-", "_")
        value = next(flags, None)
        if not flag.startswith("--") or value is None or value.startswith("--"):
            raise UserError(f"'{flag}' must be followed by a value (lch train --help)")
        target = train_options if name in train_fields else method_options
        if target is method_options and name not in cls.Config.model_fields:
            valid = sorted({*train_fields, *cls.Config.model_fields})
            listed = ", ".join("--" + v.replace("_", "-") for v in valid)
            raise UserError(f"unknown option '{flag}' for {method}. Valid: {listed}")
        target.update(options([f"{name}={value}"], flag))
    return method_options, train_options


def generator_options(extra: list[str], cls) -> dict[str, Any]:
    """`--name value` flags after the generator's name -> its options, each name checked against its config."""
    fields = list(cls.Config.model_fields)
    if len(extra) % 2 or not all(flag.startswith("--") for flag in extra[::2]):
        raise UserError(f"generator options come as --name value pairs, got '{' '.join(extra)}' (lch make-data --help)")
    chosen: dict[str, Any] = {}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        name = flag.removeprefix("--").replace("-", "_")
        if name not in fields:
            listed = ", ".join("--" + field.replace("_", "-") for field in fields)
            raise UserError(f"unknown option '{flag}' for generator {cls.name}. Valid: {listed}")
        chosen |= options([f"{name}={value}"], flag)
    return chosen
