"""`InProcessContext`: TFF's execution context on this process's TensorFlow runtime.

It compiles each computation once (step 1 of `keras_luar.backends.in_process`),
keeps the compiled blocks, their embedded TensorFlow functions and the traced
rounds, and runs a call: traced when it can, walked otherwise.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import _tff_internals
from keras_luar._tff_internals import building_blocks as bb
from keras_luar._validation import check_int
from keras_luar.backends.in_process.blocks import Embedded, embed
from keras_luar.backends.in_process.interpreter import BlockFunction, Evaluator
from keras_luar.backends.in_process.tracing import Traced, leaf_signature
from keras_luar.backends.in_process.values import cardinality, flatten, ingest, to_python


def compile_computation(comp: Any, *, tff_grappler: bool) -> Any:
    """Compiles a TFF computation as TFF's native C++ context does.

    Intrinsics such as the weighted mean become ``federated_aggregate`` over
    TensorFlow blocks, and the whole is brought to call-dominant form. Secure
    summation is first replaced by its plain equivalent, as TFF's test backend
    does (see `keras_luar._tff_internals.without_secure_intrinsics`).

    Args:
      comp: A TFF computation.
      tff_grappler: Also run TFF's static Grappler pass over every block (and
        switch Grappler off inside them), exactly as TFF's C++ context does.

    Returns:
      The compiled building block.
    """
    comp = _tff_internals.without_secure_intrinsics(comp)
    if tff_grappler:
        return _tff_internals.desugar_and_transform_to_native(comp).to_building_block()
    block, _ = _tff_internals.replace_intrinsics_with_bodies(comp.to_building_block())
    return _tff_internals.to_call_dominant(block)


class InProcessContext(tff.framework.SyncContext):
    """A synchronous TFF execution context on this process's TensorFlow runtime.

    Install it for a block of code with
    ``tff.framework.get_context_stack().install(InProcessContext())`` (the
    trainer does this for ``backend="tensorflow"``); every TFF computation
    called inside runs in process.

    Args:
      device: Optional device name (e.g. ``"/GPU:0"``) to run the TensorFlow
        blocks on; None lets TensorFlow place them (on the first GPU when
        there is one).
      parallel_clients: How many clients of a ``federated_map`` run at once:
        traced, as independent calls inside TensorFlow; walked, each in a
        thread of its own. Results are collected in client order, so the
        outcome does not depend on it.
      trace: Run each computation as one traced `tf.function` (step 4 of the
        module docstring; the default) rather than walking its building
        blocks in Python on every call.
      tff_grappler: Compile with TFF's own static Grappler pass, exactly as
        its C++ context does (step 1 of the module docstring).
    """

    def __init__(
        self,
        device: str | None = None,
        *,
        parallel_clients: int = 1,
        trace: bool = True,
        tff_grappler: bool = False,
    ):
        parallel_clients = check_int("parallel_clients", parallel_clients, 1)
        for name, flag in (("trace", trace), ("tff_grappler", tff_grappler)):
            if not isinstance(flag, bool):
                raise TypeError(
                    f"Invalid value for argument `{name}`. Expected True or False. "
                    f"Received: {name}={flag!r}"
                )
        self._tff_grappler = tff_grappler
        self._device = device
        self._parallel = parallel_clients
        self._trace = trace
        # Traced, clients run at once inside TensorFlow (see `map_clients`);
        # walked, they run in threads.
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(parallel_clients)
            if parallel_clients > 1 and not trace
            else None
        )
        self._compiled: dict[int, tuple[Any, Any]] = {}  # id(comp) -> (comp, block)
        self._embedded: dict[tuple, tuple[Any, Embedded]] = {}  # (block, thread, copy)
        self._traced: dict[tuple, tuple[Any, Any]] = {}  # (comp, signature) -> (comp, Traced)

    def invoke(self, comp: Any, arg: Any) -> Any:
        """Runs `comp` on `arg`; returns what TFF's C++ context would return.

        Args:
          comp: A TFF computation.
          arg: Its argument, as TFF's contexts take it (None without a parameter).

        Returns:
          The result, as numpy values in the Python containers of its type.
        """
        type_signature = comp.type_signature
        block = self._compile(comp)
        parameter = type_signature.parameter
        value = None
        num_clients = 0
        if parameter is not None:
            num_clients = cardinality(arg, parameter)
            value = ingest(arg, parameter, num_clients)
        with tf.device(self._device) if self._device else contextlib.nullcontext():
            leaves, spec = flatten(value)
            traced = self._traced_function(comp, block, leaves, spec, num_clients)
            if traced is not None:
                result = traced(leaves)
            else:
                function = Evaluator(self, num_clients, self._pool).evaluate(block, {})
                result = function(value)
        return to_python(result, type_signature.result)

    def _traced_function(self, comp, block, leaves, spec, num_clients) -> Traced | None:
        """`comp` traced for arguments of this nesting and these leaf types.

        None when tracing is off or the computation cannot be traced.
        """
        if not self._trace:
            return None
        signature = tuple(leaf_signature(v) for v in leaves)
        key = (id(comp), num_clients, spec, signature)
        cached = self._traced.get(key)
        if cached is None or cached[0] is not comp:
            traced = Traced.build(self, block, num_clients, signature, spec)
            cached = self._traced[key] = (comp, traced)
        return cached[1]

    def _compile(self, comp):
        key = id(comp)
        cached = self._compiled.get(key)
        if cached is None or cached[0] is not comp:
            block = compile_computation(comp, tff_grappler=self._tff_grappler)
            cached = self._compiled[key] = (comp, block)
        return cached[1]

    def embedded(self, block: bb.CompiledComputation, copy: int = 0) -> Embedded:
        """The concrete function of a TensorFlow block (built on first use, per thread).

        A block's variables are named resources that live for one call, so two
        clients training at once (in different threads, or as different
        `copy` numbers in one traced round) need copies of their own.

        Args:
          block: A TensorFlow block of a compiled computation.
          copy: Which copy of the block's variables.

        Returns:
          The embedded block; calling it runs the block.
        """
        key = (id(block), threading.get_ident(), copy)
        cached = self._embedded.get(key)
        if cached is None or cached[0] is not block:
            with tf.init_scope():  # eagerly, also when first met while tracing
                embedded = embed(block)
            cached = self._embedded[key] = (block, embedded)
        return cached[1]

    def map_clients(self, function: Callable, values: list, pool: Any = None) -> list:
        """Applies `function` to every client's value; the results in client order.

        This is ``federated_map`` over CLIENTS. Subclasses may run the calls
        elsewhere (`keras_luar.backends.WorkerPoolContext` sends the calls of a
        `BlockFunction` to TFF workers).

        Args:
          function: The mapped function; a `BlockFunction` when it is a
            TensorFlow block.
          values: One value per client.
          pool: The context's thread pool (``parallel_clients > 1``) or None.

        Returns:
          A list with one result per client, in the order of `values`.
        """
        if pool is not None:
            return list(pool.map(function, values))
        if self._parallel > 1 and isinstance(function, BlockFunction) and tf.inside_function():
            # Traced: client i uses copy i mod parallel_clients of the block. Calls
            # on one copy run one after the other; calls on different copies share
            # no variables, so TensorFlow may run them at the same time.
            return [function.call_copy(v, i % self._parallel) for i, v in enumerate(values)]
        return [function(v) for v in values]
