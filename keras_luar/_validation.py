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


def check_weighted_factory(name: str, value: Any) -> Any:
    """Returns `value`, or TFF's MeanFactory for None; raises if it is not a weighted factory."""
    import tensorflow_federated as tff

    if value is None:
        return tff.aggregators.MeanFactory()
    if not isinstance(value, tff.aggregators.WeightedAggregationFactory):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected a "
            "tff.aggregators.WeightedAggregationFactory. Received: "
            f"{name}={type(value).__name__}"
        )
    return value
