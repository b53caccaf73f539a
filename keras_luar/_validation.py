"""Argument checks shared by the public classes."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(name: str, value: Any, minimum: int) -> int:
    """Returns `value` as an int, or raises naming the argument, the value and the bound."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected an int >= {minimum}. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if value < minimum:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected an int >= {minimum}. "
            f"Received: {name}={value!r}"
        )
    return int(value)
