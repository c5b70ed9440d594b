"""Pydantic validation as one-line `UserError`s that name the field and, for an unknown one, the valid ones."""

from __future__ import annotations

from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from harness.core.errors import UserError


def one_line(error: ValidationError, where: str, model: type[BaseModel], given: dict[str, Any] | None = None) -> str:
    """A pydantic error as one line naming the field; unknown fields list the valid ones.

    A model-level validator (one that checks options together) names no field, so the line shows the
    options the user gave instead: `method 'streaming': invalid options window=-5: need n_sink >= 0, ...`.
    """
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a ValueError raised in a validator
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown option '{field}'. Valid: {', '.join(_fields_at(model, first['loc'][:-1]))}"
    if not field:
        options = ", ".join(f"{key}={value}" for key, value in (given or {}).items()) or "(defaults)"
        return f"{where}: invalid options {options}: {message}"
    return f"{where}: {field}: {message}"


def validate(model: type[BaseModel], data: dict[str, Any], where: str) -> Any:
    """Build `model(**data)`, turning validation errors into a one-line `UserError`.

    A scalar given for a list-only field is a one-element list (`--task-opt depths=0.5`).
    """
    data = {
        name: [value] if _list_only(model, name) and not isinstance(value, list | tuple) else value
        for name, value in data.items()
    }
    try:
        return model(**data)
    except ValidationError as error:
        raise UserError(one_line(error, where, model, data)) from None


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    """The fields of the model found at `path` inside `model` (`("methods", 1)`: a method entry's), for `Valid:`."""
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = [field.annotation] if field is not None else []
        while inner and not (isinstance(inner[0], type) and issubclass(inner[0], BaseModel)):
            inner = [*get_args(inner[0]), *inner[1:]] if get_args(inner[0]) else inner[1:]
        if not inner:
            break
        model = inner[0]
    return list(model.model_fields)


def _list_only(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields.get(name)
    return field is not None and get_origin(field.annotation) is list
