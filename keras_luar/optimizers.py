"""Keras optimizers as TFF optimizers.

TFF's learning processes take `tff.learning.optimizers.Optimizer` objects.
Keras users think in `tf.keras.optimizers.SGD(0.01, momentum=0.9)`; this module
translates the supported Keras optimizers (SGD with or without momentum, Adam,
RMSprop, Adagrad) into their TFF equivalents. It refuses configurations TFF
cannot reproduce (Nesterov momentum, AMSGrad, gradient clipping, EMA, weight
decay, learning-rate schedule objects) instead of silently dropping them.

SGD with momentum has the same trajectory in both: Keras keeps
v <- μv - ηg, w <- w + v; TFF keeps v <- μv + g, w <- w - ηv.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

_UNSUPPORTED_KEYS = ("weight_decay", "clipnorm", "global_clipnorm", "clipvalue", "decay")


def _config(optimizer: Any) -> dict:
    config = dict(optimizer.get_config())
    lr = getattr(optimizer, "learning_rate", config.get("learning_rate"))
    if isinstance(lr, tf.keras.optimizers.schedules.LearningRateSchedule) or isinstance(
        config.get("learning_rate"), dict
    ):
        raise ValueError(
            "Keras learning-rate schedule objects change the rate per local step, which "
            "federated rounds cannot follow. Pass a constant learning rate and schedule it "
            "per round with tf.keras.callbacks.LearningRateScheduler."
        )
    config["learning_rate"] = float(tf.keras.backend.get_value(lr))
    return config


def _check_no_extras(config: dict, argument: str, name: str) -> None:
    for key in _UNSUPPORTED_KEYS:
        if config.get(key):
            raise ValueError(
                f"Invalid value for argument `{argument}`. {name} with `{key}` has no TFF "
                f"equivalent. Received: {key}={config[key]!r}"
            )
    if config.get("use_ema"):
        raise ValueError(
            f"Invalid value for argument `{argument}`. {name} with `use_ema=True` has no "
            "TFF equivalent."
        )


def to_tff_optimizer(
    optimizer: Any, argument: str = "client_optimizer"
) -> tff.learning.optimizers.Optimizer:
    """Converts a Keras optimizer to a `tff.learning.optimizers.Optimizer`.

    Args:
      optimizer: A `tf.keras.optimizers` SGD, Adam, RMSprop or Adagrad (new or
        legacy), or already a `tff.learning.optimizers.Optimizer` (returned
        unchanged).
      argument: The argument name to use in error messages.

    Returns:
      The equivalent TFF optimizer.

    Raises:
      TypeError: For any other object.
      ValueError: For options TFF cannot reproduce (see the module docstring).

    Examples:
      >>> import tensorflow as tf
      >>> opt = to_tff_optimizer(tf.keras.optimizers.SGD(0.1, momentum=0.9))
      >>> type(opt).__name__
      '_SGD'
    """
    if isinstance(optimizer, tff.learning.optimizers.Optimizer):
        return optimizer
    kind = type(optimizer).__name__
    keras_types = (tf.keras.optimizers.Optimizer, tf.keras.optimizers.legacy.Optimizer)
    if not isinstance(optimizer, keras_types):
        raise TypeError(
            f"Invalid value for argument `{argument}`. Expected a Keras optimizer (SGD, "
            "Adam, RMSprop, Adagrad) or a tff.learning.optimizers.Optimizer. "
            f"Received: {argument}={optimizer!r}"
        )
    config = _config(optimizer)
    _check_no_extras(config, argument, kind)
    lr = config["learning_rate"]
    if kind == "SGD":
        if config.get("nesterov"):
            raise ValueError(
                f"Invalid value for argument `{argument}`. TFF has no Nesterov SGD. "
                "Received: nesterov=True"
            )
        momentum = float(config.get("momentum") or 0.0)
        return tff.learning.optimizers.build_sgdm(lr, momentum=momentum or None)
    if kind == "Adam":
        if config.get("amsgrad"):
            raise ValueError(
                f"Invalid value for argument `{argument}`. TFF's Adam has no AMSGrad. "
                "Received: amsgrad=True"
            )
        return tff.learning.optimizers.build_adam(
            lr, beta_1=config["beta_1"], beta_2=config["beta_2"], epsilon=config["epsilon"]
        )
    if kind == "RMSprop":
        if config.get("momentum") or config.get("centered"):
            raise ValueError(
                f"Invalid value for argument `{argument}`. TFF's RMSprop has no momentum "
                "or centering."
            )
        return tff.learning.optimizers.build_rmsprop(
            lr, decay=config["rho"], epsilon=config["epsilon"]
        )
    if kind == "Adagrad":
        return tff.learning.optimizers.build_adagrad(
            lr,
            initial_preconditioner_value=config["initial_accumulator_value"],
            epsilon=config["epsilon"],
        )
    raise TypeError(
        f"Invalid value for argument `{argument}`. Keras {kind} has no TFF equivalent here; "
        "use SGD, Adam, RMSprop or Adagrad, or pass a tff.learning.optimizers.Optimizer. "
        f"Received: {argument}={kind}"
    )
