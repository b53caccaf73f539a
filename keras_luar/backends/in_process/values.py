"""Values of the in-process backend: Python arguments in, results out, and flat leaves.

The interpreter represents a federated value as a plain Python value: one value
at the server, a list with one entry per client at the clients; structures are
`tff.structure.Struct`s of tensors and datasets. This module converts a
computation's Python argument into that representation (`ingest`), a result
back into what TFF's C++ context returns (`to_python`), a worker's result
into it (`from_wire`), and flattens it into tensor leaves and back for a
traced call (`flatten`, `unflatten`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import _tff_internals

Struct = tff.structure.Struct


def _struct_items(value: Any, type_spec: tff.StructType) -> list[tuple[str | None, Any, Any]]:
    """(name, element, element type) for each element of `value`, a structure of `type_spec`."""
    elements = tff.structure.to_elements(tff.structure.from_container(value))
    return [
        (name, element, element_type)
        for (_, element), (name, element_type) in zip(
            elements, tff.structure.iter_elements(type_spec), strict=True
        )
    ]


def cardinality(arg: Any, type_spec: Any) -> int:
    """The number of clients: the length of the first CLIENTS-placed list in `arg`.

    Args:
      arg: A computation's Python argument.
      type_spec: Its TFF type.

    Returns:
      The number of clients, or 0 when nothing in `arg` is placed at them.
    """
    if isinstance(type_spec, tff.FederatedType):
        if type_spec.placement is tff.CLIENTS and not type_spec.all_equal:
            return len(arg)
        return 0
    if isinstance(type_spec, tff.StructType):
        for _, value, element_type in _struct_items(arg, type_spec):
            found = cardinality(value, element_type)
            if found:
                return found
    return 0


def ingest(value: Any, type_spec: Any, num_clients: int) -> Any:
    """Converts a Python argument to the interpreter's representation of `type_spec`.

    Args:
      value: A computation's Python argument (or a part of it).
      type_spec: Its TFF type.
      num_clients: How many clients an all-equal CLIENTS value is repeated for.

    Returns:
      Tensors, datasets, `Struct`s of them, and lists for CLIENTS-placed values.

    Raises:
      TypeError: For client data that is not a `tf.data.Dataset`, or a type
        the backend cannot take.
    """
    if isinstance(type_spec, tff.FederatedType):
        member = type_spec.member
        if type_spec.placement is tff.CLIENTS:
            if type_spec.all_equal:
                return [ingest(value, member, num_clients)] * num_clients
            return [ingest(v, member, num_clients) for v in value]
        return ingest(value, member, num_clients)
    if isinstance(type_spec, tff.StructType):
        return Struct(
            (name, ingest(v, t, num_clients)) for name, v, t in _struct_items(value, type_spec)
        )
    if isinstance(type_spec, tff.SequenceType):
        if not isinstance(value, tf.data.Dataset):
            raise TypeError(
                "The in-process backend takes client data as tf.data.Dataset. "
                f"Received: {type(value).__name__}"
            )
        return value
    if isinstance(type_spec, tff.TensorType):
        if tf.is_tensor(value):
            return value
        return tf.convert_to_tensor(value, dtype=tf.as_dtype(type_spec.dtype))
    raise TypeError(f"The in-process backend cannot take a value of type {type_spec}.")


def from_wire(value: Any, type_spec: Any) -> Any:
    """A TFF worker's result (numpy values) in the interpreter's representation of `type_spec`.

    Args:
      value: What TFF's `RemoteExecutor` computed for a TensorFlow block.
      type_spec: The block's result type.

    Returns:
      Tensors and `Struct`s of them.
    """
    if isinstance(type_spec, tff.StructType):
        return Struct((name, from_wire(v, t)) for name, v, t in _struct_items(value, type_spec))
    if isinstance(type_spec, tff.TensorType):
        return tf.constant(np.asarray(value), dtype=tf.as_dtype(type_spec.dtype))
    return value


def to_numpy(value: Any) -> Any:
    """The interpreter's value with every eager tensor as a numpy array.

    What TFF's contexts return, and what TFF's serializer takes for a call
    sent to a worker.

    Args:
      value: Tensors, datasets, `Struct`s and lists of them.

    Returns:
      The same nesting, tensors replaced by numpy arrays.
    """
    if isinstance(value, Struct):
        return Struct((n, to_numpy(v)) for n, v in tff.structure.iter_elements(value))
    if isinstance(value, list):
        return [to_numpy(v) for v in value]
    if isinstance(value, tf.Tensor):
        return value.numpy()
    return value


def to_python(value: Any, type_spec: Any) -> Any:
    """A computation's result as TFF's C++ context returns it.

    Args:
      value: The interpreter's result.
      type_spec: The computation's result type.

    Returns:
      Numpy values in the Python containers of `type_spec`.
    """
    if isinstance(type_spec, tff.FederatedType) and type_spec.all_equal:
        if type_spec.placement is tff.CLIENTS and isinstance(value, list):
            value = value[0] if value else None
    return _tff_internals.type_to_py_container(to_numpy(value), type_spec)


def flat_types(type_spec: Any) -> list[Any]:
    """The leaf types of `type_spec`, in the order of `tff.structure.flatten`.

    Args:
      type_spec: A TFF type.

    Returns:
      Its non-struct types, depth first.
    """
    if isinstance(type_spec, tff.StructType):
        return [t for _, e in tff.structure.iter_elements(type_spec) for t in flat_types(e)]
    return [type_spec]


def flatten(value: Any) -> tuple[list, Any]:
    """The leaves of an interpreter value and a hashable description of its nesting.

    Args:
      value: Tensors, datasets, `Struct`s, lists and None.

    Returns:
      The leaves (tensors and datasets), depth first, and a spec that
      `unflatten` takes.
    """
    leaves: list = []

    def walk(v):
        if isinstance(v, Struct):
            names = tuple(n for n, _ in tff.structure.iter_elements(v))
            return ("struct", names, tuple(walk(e) for e in v))
        if isinstance(v, list):
            return ("list", tuple(walk(e) for e in v))
        if v is None:
            return ("none",)
        leaves.append(v)
        return ("leaf",)

    return leaves, walk(value)


def unflatten(spec: Any, leaves: Iterator[Any]) -> Any:
    """The value that `flatten` described by `spec`, with `leaves` in place of its leaves.

    Args:
      spec: A nesting from `flatten`.
      leaves: An iterator over the new leaves, consumed in order.

    Returns:
      The rebuilt value.
    """
    kind = spec[0]
    if kind == "struct":
        return _tff_internals.make_struct(spec[1], [unflatten(s, leaves) for s in spec[2]])
    if kind == "list":
        return [unflatten(s, leaves) for s in spec[1]]
    if kind == "none":
        return None
    return next(leaves)
