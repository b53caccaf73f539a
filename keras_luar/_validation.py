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


def check_aggregation_types(owner: str, value_type: Any, weight_type: Any) -> tuple[Any, Any]:
    """Converts and checks a weighted factory's `create` types; raises TypeError naming `owner`."""
    import tensorflow as tf
    import tensorflow_federated as tff

    value_type = tff.types.to_type(value_type)
    weight_type = tff.types.to_type(weight_type)
    if not tff.types.is_structure_of_floats(value_type):
        raise TypeError(
            f"{owner}.create: expected `value_type` to be a structure of float "
            f"tensors. Received: value_type={value_type}"
        )
    if not (
        isinstance(weight_type, tff.TensorType) and tf.as_dtype(weight_type.dtype).is_floating
    ):
        raise TypeError(
            f"{owner}.create: expected `weight_type` to be a float tensor type. "
            f"Received: weight_type={weight_type}"
        )
    return value_type, weight_type
