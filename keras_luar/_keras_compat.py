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


_MAXINT32 = 2**31 - 1


def seeded_shuffle(dataset: tf.data.Dataset, buffer_size: Any, seed: int, op_seed: Any):
    """``dataset.shuffle(buffer_size, seed=op_seed)`` under global seed `seed`, also when traced.

    `Dataset.shuffle` turns (global seed, op seed) into the kernel's two seeds
    in Python, with a comparison that needs a concrete op seed, so inside a
    `tf.function` it cannot take a tensor op seed while the global seed is 0.
    This builds the same kernel (``ShuffleDatasetV3``, reshuffled at each
    repetition, as in eager mode) with the same two seeds: (global seed mod
    2³¹−1, op seed mod 2³¹−1), and (0, 2³¹−1) in place of (0, 0). So the
    elements come in the same order as eagerly, under `global_seed` (seed).

    Args:
      dataset: The dataset to shuffle.
      buffer_size: The shuffle buffer (an int64 scalar or int).
      seed: The global seed the eager call runs under.
      op_seed: The op seed, an int64 scalar tensor or int.

    Returns:
      The shuffled dataset.
    """
    op_seed = tf.math.floormod(tf.cast(op_seed, tf.int64), _MAXINT32)
    seed = seed % _MAXINT32
    seed2 = op_seed
    if seed == 0:
        seed2 = tf.where(tf.equal(op_seed, 0), tf.constant(_MAXINT32, tf.int64), op_seed)
    specs = tf.nest.flatten(dataset.element_spec)
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(dataset),
        buffer_size=tf.cast(buffer_size, tf.int64),
        seed=tf.constant(seed, tf.int64),
        seed2=seed2,
        seed_generator=tf.raw_ops.DummySeedGenerator(),
        output_types=[s.dtype for s in specs],
        output_shapes=[s.shape for s in specs],
        reshuffle_each_iteration=True,
    )
    return tf.data.experimental.from_variant(variant, dataset.element_spec)


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


def is_functional(model: tf.keras.Model) -> bool:
    """Whether `model` is a functional (graph) model. Keras 2.14: ``_is_graph_network``."""
    return bool(getattr(model, "_is_graph_network", False))


def inbound_layers(model: tf.keras.Model, layer: tf.keras.layers.Layer) -> list:
    """The layers that feed `layer` inside the functional `model`.

    Keras 2.14 keeps a layer's call sites in ``_inbound_nodes``; only those that
    belong to `model` (named ``<layer>_ib-<i>`` in ``model._network_nodes``) count.
    """
    nodes = getattr(model, "_network_nodes", set())
    inbound = []
    for index, node in enumerate(layer._inbound_nodes):
        if f"{layer.name}_ib-{index}" in nodes:
            inbound.extend(source for source, _, _, _ in node.iterate_inbound())
    return inbound


def output_layers(model: tf.keras.Model) -> list:
    """The layers whose outputs the functional `model` returns (``_output_layers``)."""
    return list(model._output_layers)


def is_subclassed(model: tf.keras.Model) -> bool:
    return not (
        isinstance(model, tf.keras.Sequential) or getattr(model, "_is_graph_network", False)
    )


def loss_factory(loss: Any):
    """A function that returns a fresh copy of `loss`, resolved as `model.compile` does.

    Accepts what Keras 2's `compile` accepts for a single-output model: a
    `tf.keras.losses.Loss`, a loss name (``"sparse_categorical_crossentropy"``,
    ``"mse"``), a loss function, or a config dict. A function is wrapped the way
    Keras wraps it (``LossFunctionWrapper``, named after the function).

    Raises:
      TypeError: For anything else (the message names the argument).
    """
    from keras.src import losses as keras_losses
    from keras.src.engine.compile_utils import get_custom_object_name

    if isinstance(loss, tf.keras.losses.Loss):
        return lambda: type(loss).from_config(loss.get_config())
    try:
        resolved = tf.keras.losses.get(loss) if isinstance(loss, str | dict) else loss
    except ValueError as error:
        raise TypeError(
            "Invalid value for argument `loss`. Expected a Keras loss: a name, a "
            f"tf.keras.losses.Loss or a function. Received: loss={loss!r} ({error})"
        ) from None
    if isinstance(resolved, tf.keras.losses.Loss):
        return lambda: type(resolved).from_config(resolved.get_config())
    if callable(resolved):
        name = loss if isinstance(loss, str) else get_custom_object_name(resolved)
        return lambda: keras_losses.LossFunctionWrapper(resolved, name=name)
    raise TypeError(
        "Invalid value for argument `loss`. Expected a Keras loss (name, object or "
        f"function). Received: loss={loss!r}"
    )


_KERAS_SHORTCUTS = ("accuracy", "acc", "crossentropy", "ce")


def check_metrics(metrics: Any) -> list:
    """Checks `metrics` as `model.compile` would take them; returns them as a flat list.

    Raises:
      TypeError: For an entry that is not a name, a function or a Keras metric.
    """
    if metrics is None:
        return []
    if isinstance(metrics, str | tf.keras.metrics.Metric) or callable(metrics):
        metrics = [metrics]
    flat = tf.nest.flatten(metrics)
    for metric in flat:
        if isinstance(metric, str) and metric.lower() in _KERAS_SHORTCUTS:
            continue
        try:
            resolved = tf.keras.metrics.get(metric) if isinstance(metric, str | dict) else metric
        except ValueError:
            resolved = None
        if not (isinstance(resolved, tf.keras.metrics.Metric) or callable(resolved)):
            raise TypeError(
                "Invalid value for argument `metrics`. Expected Keras metric names, "
                f"functions or objects. Received: {metric!r}"
            )
    return flat


def metric_factories(metrics: list, label_shape: Any, output_shape: Any) -> list:
    """Functions returning fresh Keras metric objects, resolved as `model.compile` does.

    ``"accuracy"``/``"acc"`` and ``"crossentropy"``/``"ce"`` become the binary,
    sparse categorical or categorical variant by the shapes of the labels and the
    model's output, with Keras 2's own rule: binary if the output's last dimension
    is 1, sparse if the labels have a lower rank than the output (or a last
    dimension of 1 against a wider output), categorical otherwise. Functions are
    wrapped in ``MeanMetricWrapper`` named after them; metric objects are copied.

    Args:
      metrics: As returned by `check_metrics`.
      label_shape: The batched shape of the labels, e.g. ``(None,)``.
      output_shape: The batched shape of the model's output, e.g. ``(None, 10)``.

    Returns:
      One zero-argument function per metric.
    """
    from keras.src.engine.compile_utils import get_custom_object_name

    label_shape = tf.TensorShape(label_shape).as_list()
    output_shape = tf.TensorShape(output_shape).as_list()
    is_binary = output_shape[-1] == 1
    is_sparse = len(label_shape) < len(output_shape) or (
        label_shape[-1] == 1 and output_shape[-1] != 1
    )
    factories = []
    for metric in metrics:
        if isinstance(metric, str) and metric.lower() in _KERAS_SHORTCUTS:
            accuracy = metric.lower() in ("accuracy", "acc")
            if is_binary:
                fn = (
                    tf.keras.metrics.binary_accuracy
                    if accuracy
                    else tf.keras.metrics.binary_crossentropy
                )
            elif is_sparse:
                fn = (
                    tf.keras.metrics.sparse_categorical_accuracy
                    if accuracy
                    else tf.keras.metrics.sparse_categorical_crossentropy
                )
            else:
                fn = (
                    tf.keras.metrics.categorical_accuracy
                    if accuracy
                    else tf.keras.metrics.categorical_crossentropy
                )
            factories.append(lambda f=fn, n=metric: tf.keras.metrics.MeanMetricWrapper(f, name=n))
            continue
        resolved = tf.keras.metrics.get(metric) if isinstance(metric, str | dict) else metric
        if isinstance(resolved, tf.keras.metrics.Metric):
            factories.append(lambda m=resolved: type(m).from_config(m.get_config()))
        else:
            name = metric if isinstance(metric, str) else get_custom_object_name(resolved)
            factories.append(
                lambda f=resolved, n=name: tf.keras.metrics.MeanMetricWrapper(f, name=n)
            )
    return factories


def is_sparse_loss(loss: tf.keras.losses.Loss) -> bool:
    """Whether a Keras loss takes class indices as labels (sparse categorical ones)."""
    if isinstance(loss, tf.keras.losses.SparseCategoricalCrossentropy):
        return True
    fn = getattr(loss, "fn", None)  # LossFunctionWrapper (Keras 2.14)
    name = getattr(fn, "__name__", "") or getattr(loss, "name", "")
    return "sparse_categorical" in str(name)
