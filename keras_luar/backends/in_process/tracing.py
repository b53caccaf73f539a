"""A whole computation traced, once per nesting and number of clients, into one call.

The interpreter's walk runs once, inside a `tf.function`: every TensorFlow
block call becomes a call op in one graph (see
`keras_luar.backends.in_process.blocks`), and a round is then one TensorFlow
call. TensorFlow runs a function's stateful calls in program order, so the
blocks run in the order the walk runs them, and the result is the walk's, bit
for bit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from keras_luar import _tff_internals
from keras_luar.backends.in_process.interpreter import Evaluator
from keras_luar.backends.in_process.values import flatten, unflatten

if TYPE_CHECKING:
    from keras_luar.backends.in_process.blocks import Embedded
    from keras_luar.backends.in_process.context import InProcessContext

_recorder = threading.local()


class Traced:
    """One computation, for one number of clients, as a single concrete function.

    The blocks' variables are destroyed after the call, as the walk destroys
    them after each block call. Make one with `build`.

    Args:
      function: The traced concrete function, on the argument's flat leaves.
      result_spec: The nesting of its result (from `flatten`).
      embedded: The blocks with variables that it calls.
    """

    def __init__(self, function: Any, result_spec: Any, embedded: list[Embedded]):
        self._function = function
        self._result_spec = result_spec
        self._embedded = embedded

    @classmethod
    def build(
        cls,
        context: InProcessContext,
        block: Any,
        num_clients: int,
        signature: tuple[tf.TensorSpec | None, ...],
        spec: Any,
    ) -> Traced | None:
        """Traces the compiled computation `block` for arguments of this nesting and signature.

        Args:
          context: The context whose blocks the walk calls.
          block: The compiled computation.
          num_clients: How many clients its calls have.
          signature: The `leaf_signature` of each leaf of the argument.
          spec: The argument's nesting (from `flatten`).

        Returns:
          The traced computation, or None when an argument leaf or a result
          is not a tensor (such a computation is walked instead).
        """
        if any(s is None for s in signature):
            return None
        found: dict[str, Any] = {}
        used: list[Embedded] = []

        def body(*flat):
            value = unflatten(spec, iter(flat))
            with _recording(used):
                result = Evaluator(context, num_clients).evaluate(block, {})(value)
            out, found["spec"] = flatten(result)
            if not all(tf.is_tensor(t) for t in out):
                raise _Untraceable
            return out

        try:
            function = tf.function(body, input_signature=list(signature), autograph=False)
            concrete = function.get_concrete_function()
        except _Untraceable:
            return None
        return cls(concrete, found["spec"], list({id(e): e for e in used}.values()))

    def __call__(self, leaves: list) -> Any:
        """Runs the round on the leaves of its argument (as `flatten` lists them).

        Args:
          leaves: Tensors and datasets.

        Returns:
          The computation's result, in the interpreter's representation.
        """
        inputs = [tf.data.experimental.to_variant(v) if isinstance(v, tf.data.Dataset) else v
                  for v in leaves]  # fmt: skip
        outputs = _tff_internals.call_flat(self._function, inputs)
        for embedded in self._embedded:
            embedded.destroy()
        if outputs is None:
            outputs = []
        elif tf.is_tensor(outputs):
            outputs = [outputs]
        return unflatten(self._result_spec, iter(outputs))


class _Untraceable(Exception):
    """A computation whose result is not all tensors; it is walked instead."""


@contextlib.contextmanager
def _recording(used: list) -> Iterator[None]:
    previous = getattr(_recorder, "used", None)
    _recorder.used = used
    try:
        yield
    finally:
        _recorder.used = previous


def record_call(embedded: Embedded) -> None:
    """Notes that a block with variables was called while this thread traces a computation.

    Args:
      embedded: The block; the traced computation destroys its variables after each call.
    """
    used = getattr(_recorder, "used", None)
    if used is not None:
        used.append(embedded)


def leaf_signature(value: Any) -> tf.TensorSpec | None:
    """The input spec of one argument leaf of a traced computation.

    Args:
      value: A tensor or dataset (or anything else).

    Returns:
      A scalar variant spec for a dataset, the tensor's spec for a tensor,
      and None for anything else (which cannot be traced).
    """
    if isinstance(value, tf.data.Dataset):
        return tf.TensorSpec([], tf.variant)
    if tf.is_tensor(value):
        return tf.TensorSpec(value.shape, value.dtype)
    return None
