"""Validators for the settings classes (``attrs`` fields): each says which setting, and
what it got."""

from __future__ import annotations

import math
from typing import Any

import attrs


def positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def _finite(value: object) -> float | None:
    """``value`` if it is a finite int or float (a bool is no number here), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def finite_positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    number = _finite(value)
    if number is None or number <= 0:
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value!r}")


def finite_non_negative(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    number = _finite(value)
    if number is None or number < 0:
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


def none_or_positive_int(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        positive_int(instance, attribute, value)
