"""Validators for the settings classes (``attrs`` fields): each says which setting, and
what it got."""

from __future__ import annotations

import math
from typing import Any

import attrs


def positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not (_number(value) and math.isfinite(value) and value > 0):  # type: ignore[arg-type,operator]
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value!r}")


def finite_non_negative(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not (_number(value) and math.isfinite(value) and value >= 0):  # type: ignore[arg-type,operator]
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def none_or_positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        positive_int(instance, attribute, value)
