"""Data checked against the model before round 0, so that nothing fails inside a round.

What a model will see is checked once, for client data and `validation_data`
alike, with errors that name the client (or ``validation_data``), what was
received and what was expected:

* structure: ``(x, y)`` elements, the same element spec for every client, x with
  one tensor per model input (a tuple in the model's input order, or a dict
  keyed by the inputs' names);
* shapes: every known dimension of x against the model's inputs (x either
  unbatched or batched, the same for every input), and y against the output:
  one class index per example for a sparse loss, the output's shape otherwise;
* values (with ``validate_data=True``): no NaN/Inf in x, labels of a sparse loss
  whole numbers in [0, classes), no empty client.

Clients given as arrays are checked in one vectorized pass over all of them;
datasets are read once each, and the same pass counts their examples (n_i).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from keras_luar.training.client_data import Clients


def _spec_summary(spec) -> str:
    return str(tf.nest.map_structure(lambda s: f"{s.dtype.name}{s.shape.as_list()}", spec))


class ModelSignature:
    """What the data must match: the model's inputs and output, and the loss's kind.

    Args:
      model: A built Keras model with one output.
      sparse_labels: Whether the loss takes class indices (a sparse loss).
    """

    def __init__(self, model: tf.keras.Model, *, sparse_labels: bool):
        self.input_names = list(model.input_names)
        self.input_shapes = [tuple(t.shape.as_list()) for t in tf.nest.flatten(model.inputs)]
        self.output_shape = tuple(tf.nest.flatten(model.outputs)[0].shape.as_list())
        self.sparse_labels = sparse_labels

    @property
    def num_classes(self) -> int:
        """Classes of a sparse loss: the output's last dimension (2 for one logit)."""
        return max(int(self.output_shape[-1] or 2), 2)

    def inputs_of(self, x_spec: Any, where: str, argument: str) -> list:
        """x's tensor specs in the model's input order; raises if they do not line up."""
        k = len(self.input_shapes)
        if isinstance(x_spec, dict):
            if sorted(x_spec) != sorted(self.input_names):
                raise _error(
                    argument,
                    f"x as a dict keyed by the model's input names {self.input_names}. "
                    f"Received: {where} has x with keys {sorted(x_spec)}",
                )
            return [x_spec[name] for name in self.input_names]
        flat = tf.nest.flatten(x_spec)
        if len(flat) != k or (k > 1 and not isinstance(x_spec, tuple | list)):
            expected = (
                "one tensor"
                if k == 1
                else f"a tuple of {k} tensors or a dict keyed by {self.input_names}"
            )
            raise _error(
                argument,
                f"x to hold {expected}, one per model input. Received: {where} has x "
                f"{_spec_summary(x_spec)}",
            )
        return flat

    def check_spec(self, spec: Any, where: str, argument: str) -> bool:
        """Checks one element spec; returns whether it is batched."""
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise _error(
                argument, f"elements (x, y). Received: {where} yields {_spec_summary(spec)}"
            )
        x_specs = self.inputs_of(spec[0], where, argument)
        batched = None
        for x, shape, name in zip(x_specs, self.input_shapes, self.input_names, strict=True):
            rank = x.shape.rank
            if rank not in (len(shape), len(shape) - 1):
                raise _error(
                    argument,
                    f"x of rank {len(shape) - 1} (unbatched) or {len(shape)} (batched) for the "
                    f"model input {name!r} of shape {list(shape)}. Received: {where} has x of "
                    f"shape {x.shape.as_list()}",
                )
            this = rank == len(shape)
            if batched is not None and this != batched:
                raise _error(
                    argument, f"every x tensor batched or none. Received: {where} mixes them"
                )
            batched = this
            dims = x.shape.as_list()[1:] if this else x.shape.as_list()
            for got, want in zip(dims, shape[1:], strict=True):
                if got is not None and want is not None and got != want:
                    raise _error(
                        argument,
                        f"x of shape {list(shape[1:])} per example to match the model input "
                        f"{name!r}. Received: {where} has x of shape {dims} per example",
                    )
        self._check_labels(spec[1], batched, where, argument)
        return bool(batched)

    def _check_labels(self, y: Any, batched: bool, where: str, argument: str) -> None:
        if isinstance(y, dict | tuple | list):
            raise _error(
                argument, f"one label tensor y. Received: {where} has y {_spec_summary(y)}"
            )
        dims = y.shape.as_list()[1:] if batched else y.shape.as_list()
        out = list(self.output_shape[1:])
        if self.sparse_labels:
            if not (dims == [] or dims == [1] or dims == out[:-1]):
                raise _error(
                    argument,
                    f"one class index per example for the sparse loss (y of shape [] or [1] "
                    f"per example). Received: {where} has y of shape {dims} per example",
                )
            if (
                y.dtype not in (tf.int32, tf.int64, tf.int16, tf.int8, tf.uint8)
                and not y.dtype.is_floating
            ):
                raise _error(
                    argument,
                    f"integer class labels. Received: {where} has y of dtype {y.dtype.name}",
                )
            return
        scalar_for_one = dims == [] and out == [1]
        same = len(dims) == len(out) and all(
            a is None or b is None or a == b for a, b in zip(dims, out, strict=False)
        )
        if not (same or scalar_for_one):
            raise _error(
                argument,
                f"y of shape {out} per example to match the model's output. Received: {where} "
                f"has y of shape {dims} per example"
                + (
                    " (class indices need a sparse loss, e.g. SparseCategoricalCrossentropy)"
                    if dims in ([], [1])
                    else ""
                ),
            )


def _error(argument: str, message: str) -> ValueError:
    return ValueError(f"Invalid value for argument `{argument}`. Expected {message}")


def check_clients(clients: Clients, signature: ModelSignature, *, scan: bool = True) -> None:
    """Checks every client against the model; sets `batched`, `counts` and `sizes`.

    Raises:
      ValueError: Naming the client, for any of the faults the module docstring lists.
    """
    ids = clients.ids
    spec = clients.element_spec
    batched = signature.check_spec(spec, f"client {ids[0]!r}", "client_data")
    for cid, ds in clients.datasets.items():
        if ds.element_spec != spec:
            signature.check_spec(ds.element_spec, f"client {cid!r}", "client_data")
            raise _error(
                "client_data",
                f"the same element spec for every client. Received: client {ids[0]!r} yields "
                f"{_spec_summary(spec)} but client {cid!r} yields {_spec_summary(ds.element_spec)}",
            )
    clients.batched = batched
    if clients.arrays is not None and not batched:
        _check_arrays(clients, signature, scan)
    else:
        _scan_datasets(clients, signature, scan)


def _check_arrays(clients: Clients, signature: ModelSignature, scan: bool) -> None:
    """One vectorized pass over all clients' arrays; a client is named only on a fault."""
    sizes = {cid: len(y) for cid, (_, y) in clients.arrays.items()}
    empty = [cid for cid, n in sizes.items() if n == 0]
    if empty:
        raise _error(
            "client_data", f"every client to hold data. Received: client {empty[0]!r} is empty"
        )
    clients.counts = dict(sizes)
    clients.sizes = dict(sizes)
    if not scan:
        return
    ids = clients.ids
    xs = [tf.nest.flatten(clients.arrays[cid][0]) for cid in ids]
    ys = [np.asarray(clients.arrays[cid][1]) for cid in ids]
    for j in range(len(xs[0])):
        column = [np.asarray(x[j]) for x in xs]
        if np.issubdtype(column[0].dtype, np.floating):
            # Client by client: concatenating first would hold a second copy of the data.
            bad = next((k for k, c in enumerate(column) if not np.isfinite(c).all()), None)
            if bad is not None:
                raise _error(
                    "client_data",
                    f"finite inputs. Received: client {ids[bad]!r} has NaN or Inf in x",
                )
    if signature.sparse_labels:
        labels = np.concatenate([y.reshape(-1) for y in ys])
        _check_label_values(
            labels, signature, lambda k: f"client {ids[_owner(ys, k)]!r}", "client_data"
        )


def _owner(parts: list, flat_index: int) -> int:
    ends = np.cumsum([p.size for p in parts])
    return int(np.searchsorted(ends, flat_index, side="right"))


def _check_label_values(labels: np.ndarray, signature: ModelSignature, who, argument: str) -> None:
    classes = signature.num_classes
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            k = int(np.argmax(bad))
            raise _error(
                argument,
                f"whole-number class labels for the sparse loss. Received: {who(k)} has the "
                f"label {_number(labels[k])}",
            )
    outside = (labels < 0) | (labels >= classes)
    if outside.any():
        k = int(np.argmax(outside))
        raise _error(
            argument,
            f"integer labels in [0, {classes}) to match the model's "
            f"{signature.output_shape[-1]} outputs. Received: {who(k)} has the label "
            f"{_number(labels[k])}",
        )


def _number(value: Any) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _scan_datasets(clients: Clients, signature: ModelSignature, scan: bool) -> None:
    sparse = signature.sparse_labels and scan
    scanner = _scanner(sparse, clients.batched)
    counts, sizes = {}, {}
    for cid, ds in clients.datasets.items():
        cardinality = int(ds.cardinality())
        if not scan and not clients.batched and cardinality >= 0:
            count = examples = cardinality
        else:
            count, examples, low, high, finite, whole = (
                v.numpy() for v in scanner(ds.with_options(_SCAN_OPTIONS))
            )
            if scan and not finite:
                raise _error(
                    "client_data", f"finite inputs. Received: client {cid!r} has NaN or Inf in x"
                )
            if sparse and count and not whole:
                raise _error(
                    "client_data",
                    f"whole-number class labels for the sparse loss. Received: client {cid!r} "
                    "has labels that are not whole numbers",
                )
            if sparse and count:
                _check_label_values(
                    np.array([low, high]),
                    signature,
                    lambda k, c=cid: f"client {c!r}",
                    "client_data",
                )
        if count == 0:
            raise _error(
                "client_data", f"every client to hold data. Received: client {cid!r} is empty"
            )
        counts[cid], sizes[cid] = int(count), int(examples)
    clients.counts, clients.sizes = counts, sizes


def _scan_options() -> tf.data.Options:
    # One pass over each client: tf.data's autotuning cannot pay off, and its
    # optimization thread logs "Optimization loop failed: CANCELLED" when the pass ends.
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return options


_SCAN_OPTIONS = _scan_options()


def _scanner(sparse: bool, batched: bool):
    @tf.function
    def scan(ds):
        def step(acc, element):
            x, y = element
            count, examples, low, high, finite, whole = acc
            y_flat = tf.reshape(y, [-1])
            if sparse:
                y64 = tf.cast(y_flat, tf.float64)
                whole = tf.logical_and(whole, tf.reduce_all(tf.equal(y64, tf.round(y64))))
                low = tf.minimum(low, tf.reduce_min(y64))
                high = tf.maximum(high, tf.reduce_max(y64))
            floats = [t for t in tf.nest.flatten(x) if t.dtype.is_floating]
            if floats:
                x_finite = tf.reduce_all(
                    [tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32))) for t in floats]
                )
                finite = tf.logical_and(finite, x_finite)
            n = tf.shape(y, out_type=tf.int64)[0] if batched else tf.constant(1, tf.int64)
            return count + 1, examples + n, low, high, finite, whole

        init = (
            tf.constant(0, tf.int64),
            tf.constant(0, tf.int64),
            tf.constant(np.inf, tf.float64),
            tf.constant(-np.inf, tf.float64),
            tf.constant(True),
            tf.constant(True),
        )
        return ds.reduce(init, step)

    return scan


def validation_dataset(data: Any, signature: ModelSignature) -> tf.data.Dataset:
    """`validation_data` (a dataset or ``(x, y)``) checked and batched for `model.evaluate`.

    Raises:
      TypeError: For another type.
      ValueError: As for client data, naming ``validation_data``.
    """
    arrays = None
    if isinstance(data, tuple | list) and len(data) == 2 and not isinstance(data, tf.data.Dataset):
        arrays = (data[0], np.asarray(data[1]))
        data = tf.data.Dataset.from_tensor_slices((data[0], data[1]))
    if not isinstance(data, tf.data.Dataset):
        raise TypeError(
            "Invalid value for argument `validation_data`. Expected a tf.data.Dataset or "
            f"(x, y). Received: {type(data).__name__}"
        )
    batched = signature.check_spec(data.element_spec, "validation_data", "validation_data")
    if arrays is not None and signature.sparse_labels:
        _check_label_values(
            arrays[1].reshape(-1), signature, lambda k: "validation_data", "validation_data"
        )
    return data if batched else data.batch(256)
