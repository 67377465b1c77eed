"""Validation every config model shares (the run's sections and every component's ``Options``)."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


def no_bools_for_numbers(model: type[BaseModel], name: str, value: Any) -> Any:
    """A YAML ``true`` is no number: refuse it for an ``int`` or ``float`` field of ``model``
    (pydantic would take it as 1), and pass every other value through."""
    if isinstance(value, bool) and name in model.model_fields:
        annotation = model.model_fields[name].annotation
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        options = typing.get_args(annotation) if union else (annotation,)
        if bool not in options and any(option in (int, float) for option in options):
            raise ValueError(f"a boolean is not a number (got {value})")
    return value


class NumbersAreNumbers(BaseModel):
    """Base of every config model (run sections and component ``Options``): numbers are finite
    (no ``.inf`` or ``.nan``) and never booleans."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, value: Any, info: Any) -> Any:
        return no_bools_for_numbers(cls, info.field_name, value)
