"""Keras 2 / TFF glue for `FederatedTrainer`: compile arguments, seeds, class swaps."""

from __future__ import annotations

import contextlib
from typing import Any

import tensorflow as tf
from tensorflow.python.eager import context as tf_context


class EveryName(frozenset):
    """Progbar `stateful_metrics` that holds every name: show each round's value as is."""

    def __contains__(self, item) -> bool:
        return True


@contextlib.contextmanager
def global_seed(seed: int):
    """Makes `Dataset.shuffle(seed=...)` independent of the user's global seed.

    A shuffle's seeds are (global seed, op seed), read when the dataset is
    built, so the same op seed shuffles differently after a user's
    `tf.random.set_seed`. Only the value that op reads is swapped here; the
    user's random streams and kernel caches are left untouched.
    """
    ctx = tf_context.context()
    saved = ctx._seed
    ctx._seed = seed
    try:
        yield
    finally:
        ctx._seed = saved


def restore_keras_v2_classes(model: tf.keras.Model) -> None:
    """Undoes Keras 2's global class swap after TFF built models in graph mode.

    Keras 2 picks a layer's or model's implementation when one is constructed:
    in graph mode (as inside TFF's `model_fn`) it rewrites the ``__bases__`` of
    the classes involved (Sequential, Dense, ...) to their TF1 versions, which
    changes every existing instance too. Without this, the user's eager model
    would afterwards run TF1 `evaluate`/`predict` and fail.
    """
    from keras.src.engine import base_layer, base_layer_v1, training, training_v1
    from keras.src.utils import version_utils

    classes = {type(layer) for layer in model._flatten_layers(include_self=True)}
    classes |= {tf.keras.Sequential, tf.keras.Model}
    for cls in classes:
        if issubclass(cls, (training.Model, training_v1.Model)):
            version_utils.swap_class(cls, training.Model, training_v1.Model, use_v2=True)
        version_utils.swap_class(cls, base_layer.Layer, base_layer_v1.Layer, use_v2=True)


def is_subclassed(model: tf.keras.Model) -> bool:
    return not (isinstance(model, tf.keras.Sequential) or getattr(model, "_is_graph_network", False))


def loss_factory(loss: Any):
    if isinstance(loss, tf.keras.losses.Loss):
        return lambda: type(loss).from_config(loss.get_config())
    resolved = tf.keras.losses.get(loss) if isinstance(loss, str | dict) else loss
    if isinstance(resolved, tf.keras.losses.Loss):
        return lambda: type(resolved).from_config(resolved.get_config())
    if callable(resolved):
        return lambda: tf.keras.losses.LossFunctionWrapper(resolved)
    raise TypeError(
        "Invalid value for argument `loss`. Expected a Keras loss (name, object or "
        f"function). Received: loss={loss!r}"
    )


def metric_factories(metrics, loss_name: str) -> list:
    factories = []
    for metric in metrics or []:
        if isinstance(metric, str) and metric in ("accuracy", "acc"):
            if "sparse" in loss_name:
                cls = tf.keras.metrics.SparseCategoricalAccuracy
            elif "binary" in loss_name:
                cls = tf.keras.metrics.BinaryAccuracy
            else:
                cls = tf.keras.metrics.CategoricalAccuracy
            factories.append(lambda cls=cls: cls(name="accuracy"))
            continue
        resolved = tf.keras.metrics.get(metric) if isinstance(metric, str | dict) else metric
        if isinstance(resolved, tf.keras.metrics.Metric):
            factories.append(lambda m=resolved: type(m).from_config(m.get_config()))
        elif callable(resolved):
            name = metric if isinstance(metric, str) else resolved.__name__
            factories.append(lambda f=resolved, n=name: tf.keras.metrics.MeanMetricWrapper(f, name=n))
        else:
            raise TypeError(
                "Invalid value for argument `metrics`. Expected Keras metric names or "
                f"objects. Received: {metric!r}"
            )
    return factories
