"""The Keras side of a trainer: the model TFF builds for the clients, and its process.

TFF needs a function that builds a fresh `tff.learning.models.VariableModel`
inside its own graphs (`tff.learning.models.from_keras_model` cannot capture a
model built outside). `make_model_fn` clones the user's Keras model there, with
the loss and metrics resolved as `model.compile` resolves them and, with mixed
precision, every layer but the outputs in the low-precision policy.
`build_process` hands that and the checked configuration to the method's
builder.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

from keras_luar._keras_compat import metric_factories, restore_keras_v2_classes
from keras_luar.algorithms.spec import BuildContext
from keras_luar.layers import ModelLayout
from keras_luar.training.config import TrainerConfig


def make_model_fn(
    template: tf.keras.Model,
    *,
    loss_factory: Callable[[], tf.keras.losses.Loss],
    metrics: list,
    input_spec: Any,
    mixed_precision: str | None,
) -> Callable[[], tff.learning.models.VariableModel]:
    """A no-argument function returning a TFF model that clones `template`.

    Args:
      template: The user's built Keras model.
      loss_factory: Returns a fresh copy of the loss.
      metrics: The metrics as `model.compile` takes them.
      input_spec: The element spec of a client's batches, ``(x, y)``.
      mixed_precision: None, or the Keras dtype policy of the clients' layers.
    """
    label_spec = tf.nest.flatten(input_spec[1])[0]
    metric_fns = metric_factories(
        metrics, label_spec.shape, tf.nest.flatten(template.outputs)[0].shape
    )
    clone_function = None
    if mixed_precision is not None:
        outputs = set(template.output_names)

        def clone_function(layer):
            config = layer.get_config()
            if layer.name not in outputs:  # logits stay float32, as Keras advises
                config["dtype"] = mixed_precision
            return layer.__class__.from_config(config)

    def model_fn():
        with warnings.catch_warnings():
            # TFF warns that BatchNorm statistics "won't be updated during the
            # training"; here every method handles them (see `bn_statistics`).
            warnings.filterwarnings("ignore", message="Batch Normalization contains")
            return tff.learning.models.from_keras_model(
                tf.keras.models.clone_model(template, clone_function=clone_function),
                loss=loss_factory(),
                input_spec=input_spec,
                metrics=[f() for f in metric_fns],
            )

    return model_fn


def build_process(
    config: TrainerConfig,
    model: tf.keras.Model,
    layout: ModelLayout,
    *,
    loss_factory: Callable[[], tf.keras.losses.Loss],
    metrics: list,
    input_spec: Any,
) -> Any:
    """The method's TFF process for `model` and client batches of `input_spec`."""
    model_fn = make_model_fn(
        model,
        loss_factory=loss_factory,
        metrics=metrics,
        input_spec=input_spec,
        mixed_precision=config.mixed_precision,
    )
    # Every other field of the context is the configuration's field of the same name.
    fields = [f.name for f in dataclasses.fields(BuildContext)]
    given = {"model_fn": model_fn, "keras_model": model, "layout": layout}
    context = BuildContext(
        **given, **{name: getattr(config, name) for name in fields if name not in given}
    )
    process = config.spec.build(context)
    # TFF built Keras models in graph mode, which swaps Keras's classes to their v1
    # versions for every instance; undo it for the user's eager model.
    restore_keras_v2_classes(model)
    return process
