"""What the reference models share: argument checks, the weight-decay regularizer, the logits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from keras_luar._validation import argument_checker, check_bool, check_int


def check_weight_decay(value: Any) -> float:
    """Returns `value` as a float, or raises naming `weight_decay` if it is not finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(
            "Invalid value for argument `weight_decay`. Expected a float >= 0. "
            f"Received: weight_decay={value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(float(value)) or value < 0:
        raise ValueError(
            "Invalid value for argument `weight_decay`. Expected a float >= 0. "
            f"Received: weight_decay={value!r}"
        )
    return float(value)


def check_rate(name: str, value: Any) -> float:
    """Returns a dropout rate as a float, or raises unless 0 <= value < 1."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected a float in [0, 1). "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a float in [0, 1). "
            f"Received: {name}={value!r}"
        )
    return float(value)


check_model_arguments = argument_checker(
    {"size": lambda name, value: check_int(name, value, 1), "flag": check_bool, "rate": check_rate}
)
"""``@check_model_arguments(size="a b", flag="c", rate="d")``: ints >= 1, bools, rates in [0, 1)."""


def check_image_shape(value: Any, channels: int) -> tuple[int | None, int | None, int]:
    """Returns an ``(height, width, channels)`` input shape, or raises naming `input_shape`."""
    ok = (
        isinstance(value, tuple | list)
        and len(value) == 3
        and value[2] == channels
        and all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in value
        )
    )
    if not ok:
        raise ValueError(
            "Invalid value for argument `input_shape`. Expected (height, width, "
            f"{channels}) with positive sizes or None. Received: input_shape={value!r}"
        )
    return tuple(value)


def check_bool(name: str, value: Any) -> bool:
    """Returns `value`, or raises TypeError naming the argument if it is not a bool."""
    if not isinstance(value, bool):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected a bool. Received: {name}={value!r}"
        )
    return value


def l2(weight_decay: Any) -> tf.keras.regularizers.Regularizer | None:
    """Keras L2 regularizer for `weight_decay`; None for 0, so that no zero losses are added.

    The official FedLUAR code applies weight decay through Keras regularizers:
    its local step adds ``model.losses`` to the loss, as TFF's
    `from_keras_model` does. Keras's L2 adds ``weight_decay * sum(w**2)``.
    `weight_decay` is checked first (`check_weight_decay`).
    """
    weight_decay = check_weight_decay(weight_decay)
    return tf.keras.regularizers.L2(weight_decay) if weight_decay > 0 else None


def logits_model(
    inputs: tf.Tensor, features: tf.Tensor, units: int, name: str, **dense_options: Any
) -> tf.keras.Model:
    """Ends a reference model: a Dense layer ``"logits"`` of `units` on `features`.

    Args:
      inputs: The model's `tf.keras.Input`.
      features: The last hidden tensor.
      units: Number of logits.
      name: The model's name.
      **dense_options: More `tf.keras.layers.Dense` arguments (regularizers).

    Returns:
      The uncompiled functional model from `inputs` to the logits (no activation).
    """
    logits = tf.keras.layers.Dense(units, name="logits", **dense_options)(features)
    return tf.keras.Model(inputs, logits, name=name)


__all__ = [
    "check_bool",
    "check_image_shape",
    "check_int",
    "check_rate",
    "check_weight_decay",
    "l2",
    "logits_model",
]
