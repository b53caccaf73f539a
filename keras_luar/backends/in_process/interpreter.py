"""The building-block interpreter: a compiled TFF computation walked in Python.

Federated values are plain Python values (see `keras_luar.backends.in_process.values`).
The handful of intrinsics left after compilation (broadcast, map, apply, zip,
aggregate, value, eval) are a few lines each, with the C++ runtime's semantics
(``federated_aggregate`` accumulates the clients in order, from ``zero``).
TensorFlow blocks become `BlockFunction`s, which their context runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar._tff_internals import building_blocks as bb

if TYPE_CHECKING:
    from keras_luar.backends.in_process.context import InProcessContext

Struct = tff.structure.Struct


class BlockFunction:
    """A TensorFlow block as the evaluator calls it: runs the block in process.

    It keeps the block, so that a context can run the call somewhere else.
    The concrete function is looked up when called, so each calling thread
    uses its own copy of the block's variables.

    Args:
      context: The context whose `InProcessContext.embedded` runs the block.
      block: The ``CompiledComputation`` building block.
    """

    __slots__ = ("block", "context")

    def __init__(self, context: InProcessContext, block: bb.CompiledComputation):
        self.context = context
        self.block = block

    def __call__(self, argument: Any) -> Any:
        return self.context.embedded(self.block)(argument)

    def call_copy(self, argument: Any, copy: int) -> Any:
        """Runs the block on copy number `copy` of its variables.

        Args:
          argument: The block's argument.
          copy: Which copy of the block's variables to use.

        Returns:
          The block's result.
        """
        return self.context.embedded(self.block, copy)(argument)


class Evaluator:
    """Evaluates compiled building blocks; federated values are plain Python values.

    Args:
      context: The context that runs the TensorFlow blocks and maps over clients.
      num_clients: How many clients this call has.
      pool: The context's thread pool for ``federated_map``, or None.
    """

    def __init__(self, context: InProcessContext, num_clients: int, pool: Any = None):
        self._context = context
        self._num_clients = num_clients
        self._pool = pool

    def evaluate(self, block: Any, env: dict[str, Any]) -> Any:
        """The value of `block` in the scope `env`.

        Args:
          block: A building block of a compiled computation.
          env: The values of the references in scope, by name.

        Returns:
          Its value (a Python function for a lambda, a block or an intrinsic).

        Raises:
          NotImplementedError: For a building block or intrinsic it does not know.
        """
        if isinstance(block, bb.Reference):
            return env[block.name]
        if isinstance(block, bb.Call):
            function = self.evaluate(block.function, env)
            argument = block.argument
            return function(None if argument is None else self.evaluate(argument, env))
        if isinstance(block, bb.Block):
            scope = dict(env)
            for name, local in block.locals:
                scope[name] = self.evaluate(local, scope)
            return self.evaluate(block.result, scope)
        if isinstance(block, bb.Selection):
            source = self.evaluate(block.source, env)
            return source[block.as_index()]
        if isinstance(block, bb.Struct):
            return Struct(
                (name, self.evaluate(e, env)) for name, e in tff.structure.iter_elements(block)
            )
        if isinstance(block, bb.Lambda):
            name, result = block.parameter_name, block.result

            def function(argument, env=env):
                scope = env if name is None else {**env, name: argument}
                return self.evaluate(result, scope)

            return function
        if isinstance(block, bb.CompiledComputation):
            return BlockFunction(self._context, block)
        if isinstance(block, bb.Intrinsic):
            return self._intrinsic(block.uri)
        if isinstance(block, bb.Literal):
            return tf.constant(np.asarray(block.value))
        if isinstance(block, bb.Placement):
            return block
        raise NotImplementedError(
            f"The in-process backend cannot evaluate a {type(block).__name__} building block."
        )

    def _intrinsic(self, uri: str) -> Callable:
        n = self._num_clients
        if uri == "federated_broadcast":
            return lambda value: [value] * n
        if uri in ("federated_map", "federated_map_all_equal"):
            return lambda arg: self._context.map_clients(arg[0], arg[1], self._pool)
        if uri == "federated_apply":
            return lambda arg: arg[0](arg[1])
        if uri == "federated_value_at_server":
            return lambda value: value
        if uri == "federated_value_at_clients":
            return lambda value: [value] * n
        if uri == "federated_eval_at_server":
            return lambda function: function(None)
        if uri == "federated_eval_at_clients":
            return lambda function: [function(None) for _ in range(n)]
        if uri == "federated_zip_at_server":
            return lambda value: value
        if uri == "federated_zip_at_clients":
            return lambda value: [_select_client(value, i) for i in range(_clients_in(value))]
        if uri == "federated_aggregate":
            return _aggregate
        raise NotImplementedError(
            f"The in-process backend does not implement the intrinsic {uri!r}; run this "
            "computation with backend='tff'."
        )


def _clients_in(value: Any) -> int:
    if isinstance(value, list):
        return len(value)
    if isinstance(value, Struct):
        for element in value:
            found = _clients_in(element)
            if found >= 0:
                return found
    return -1


def _select_client(value: Any, index: int) -> Any:
    if isinstance(value, list):
        return value[index]
    if isinstance(value, Struct):
        return Struct((n, _select_client(v, index)) for n, v in tff.structure.iter_elements(value))
    return value


def _aggregate(arg: Any) -> Any:
    # As TFF's C++ federating executor: accumulate the clients in order, then report.
    values, zero, accumulate, _merge, report = (arg[i] for i in range(5))
    total = zero
    for value in values:
        total = accumulate(Struct([(None, total), (None, value)]))
    return report(total)
