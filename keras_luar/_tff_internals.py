"""The one door to TFF's (and TensorFlow's) private internals.

keras_luar runs TFF's computations in process, sends client calls to TFF
workers, guards TFF's ``worker_binary`` and reads TFF's data sets with parts
of TensorFlow Federated that are not public API
(``tensorflow_federated.python...``), plus one private TensorFlow method. Every
such import and every use of a private attribute is here, and only here: each
name says the TFF version it was written against (0.87.0, which pins
TensorFlow 2.14) and what keras_luar uses it for, so that a TFF upgrade is
checked in one place.

Importing this module imports TFF (which already imports every module named
here) and changes nothing; the ``patch_*`` functions change TFF, and only
`keras_luar._runtime.install` calls them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import grpc
import tensorflow as tf
import tensorflow_federated as tff

# TFF 0.87.0: the native C++ context's compilation (desugared intrinsics, TFF's static
# Grappler pass); `InProcessContext(tff_grappler=True)` compiles with it.
from tensorflow_federated.python.core.backends.native.compiler import (
    desugar_and_transform_to_native,
)

# TFF 0.87.0: the test backend's compilation of secure summation into plain TensorFlow
# (TFF's native runtime has no secure-sum intrinsic); see `without_secure_intrinsics`.
from tensorflow_federated.python.core.backends.test.compiler import (
    _replace_secure_intrinsics_with_insecure_bodies,
)

# TFF 0.87.0: where TFF runs Grappler on each block; `_runtime` quiets its log lines.
from tensorflow_federated.python.core.environments.tensorflow_backend import (
    graph_optimizations as _graph_optimizations,
)

# TFF 0.87.0: see `replace_intrinsics_with_bodies` below.
from tensorflow_federated.python.core.environments.tensorflow_backend import (
    tensorflow_tree_transformations as _tree_transformations,
)

# TFF 0.87.0: the building-block classes (Call, Lambda, CompiledComputation, ...) that the
# in-process interpreter walks.
from tensorflow_federated.python.core.impl.compiler import building_blocks

# TFF 0.87.0: a compiled computation brought to call-dominant form (the in-process compile).
from tensorflow_federated.python.core.impl.compiler.transformations import to_call_dominant

# TFF 0.87.0: starts the local `worker_binary`; `_runtime` hands it a guarded `Popen`.
from tensorflow_federated.python.core.impl.executor_stacks import (
    executor_factory as _executor_factory,
)

# TFF 0.87.0: the errors a worker call raises when its worker is gone (retried elsewhere).
from tensorflow_federated.python.core.impl.executors.executors_errors import (
    RetryableError,
    RetryableGRPCError,
)

# TFF 0.87.0: TFF's own client of a worker; the worker pool sends its client calls with it.
from tensorflow_federated.python.core.impl.executors.remote_executor import RemoteExecutor
from tensorflow_federated.python.core.impl.executors.remote_executor_grpc_stub import (
    RemoteExecutorGrpcStub as _RemoteExecutorGrpcStub,
)

# TFF 0.87.0: a result in the Python containers of its type (what TFF's contexts return).
from tensorflow_federated.python.core.impl.types.type_conversions import type_to_py_container

# TFF 0.87.0: the feed and fetch tensor names of a TensorFlow block's parameter and result.
from tensorflow_federated.python.core.impl.utils.tensorflow_utils import (
    extract_tensor_names_from_binding,
)

# TFF 0.87.0: `keras_luar.data.femnist` downloads TFF's FEMNIST archive (`download`) and
# reads its SQLite database (`sql_client_data`) with these.
from tensorflow_federated.python.simulation.datasets import download, sql_client_data

# TFF 0.87.0: a TensorFlow block's GraphDef out of its `Any` proto field.
from tensorflow_federated.python.tensorflow_libs.serialization_utils import unpack_graph_def

# TensorFlow 2.14 (TFF 0.87.0's pin): the class `tf.data.Dataset.from_tensor_slices` returns;
# see `tensor_slices` below.
from tensorflow.python.data.ops.from_tensor_slices_op import (  # isort: skip
    _TensorSliceDataset,
)

__all__ = [
    "RemoteExecutor",
    "RetryableError",
    "RetryableGRPCError",
    "building_blocks",
    "call_flat",
    "deadline_stub",
    "desugar_and_transform_to_native",
    "download",
    "extract_tensor_names_from_binding",
    "graph_function",
    "holds_secure_intrinsics",
    "make_struct",
    "patch_executor_subprocess",
    "patch_grappler",
    "register_functions",
    "replace_intrinsics_with_bodies",
    "run_sync",
    "silence_service_manager_teardown",
    "sql_client_data",
    "tensor_slices",
    "to_call_dominant",
    "type_to_py_container",
    "unpack_graph_def",
    "without_secure_intrinsics",
]


# TFF 0.87.0: intrinsics (weighted mean, sum, ...) replaced by `federated_aggregate` over
# TensorFlow blocks; the in-process backend's default compilation.
replace_intrinsics_with_bodies = _tree_transformations.replace_intrinsics_with_bodies


# TFF 0.87.0's secure aggregation intrinsics (`intrinsic_defs`); `federated_secure_select`
# has no insecure body in TFF's test compiler, so it is not listed.
_SECURE_INTRINSICS = frozenset(
    {"federated_secure_sum", "federated_secure_sum_bitwidth", "federated_secure_modular_sum"}
)


def holds_secure_intrinsics(comp: Any) -> bool:
    """Whether the TFF computation `comp` calls a secure-summation intrinsic."""
    stack = [comp.to_building_block()]
    while stack:
        block = stack.pop()
        if isinstance(block, building_blocks.Intrinsic) and block.uri in _SECURE_INTRINSICS:
            return True
        stack.extend(block.children())
    return False


def without_secure_intrinsics(comp: Any) -> Any:
    """`comp` with secure summation simulated by plain sums, as TFF's test backend runs it.

    TFF 0.87.0's C++ runtime cannot run ``federated_secure_sum_bitwidth`` (nor
    the other secure sums): a process that holds `tff.aggregators.SecureSumFactory`
    fails there with "Cannot embed a federated value". TFF's own simulation of
    secure aggregation (``tff.backends.test``) replaces each secure intrinsic
    with its plain TensorFlow equivalent before running: the sum a secure
    aggregation protocol returns is exactly the plain sum of the clients' integer
    encodings, so the values are the same; only the cryptography is left out.

    Args:
      comp: A TFF computation.

    Returns:
      `comp` itself when it holds no secure intrinsic, else the computation
      with them replaced.
    """
    if not holds_secure_intrinsics(comp):
        return comp
    block, _ = _replace_secure_intrinsics_with_insecure_bodies(comp.to_building_block())
    # TFF's own `replace_secure_intrinsics_with_bodies` drops the Python containers of
    # the type (a process's `next` would return dicts); keep the computation's type.
    return tff.framework.ConcreteComputation(
        computation_proto=block.proto,
        context_stack=tff.framework.get_context_stack(),
        annotated_type=comp.type_signature,
    )


def graph_function(
    python_function: Callable, input_signature: list, attributes: dict[str, Any]
) -> Any:
    """A concrete function traced without automatic control dependencies (TensorFlow 2.14).

    `tf.function` orders the stateful ops of its body by automatic control
    dependencies, which cannot process graphs imported with TensorFlow 1 control
    flow (TFF's Grappler pass lowers conditionals to Switch/Merge). A TFF block's
    GraphDef carries the control edges its ops need, as a session runs it; the
    in-process backend imports it with this (`tf.compat.v1.wrap_function` traces
    the same way, but copies the whole graph to register its functions).

    Args:
      python_function: Builds the body from its flat input tensors.
      input_signature: One `tf.TensorSpec` per input.
      attributes: Function attributes, e.g. ``{"_noinline": True}``.

    Returns:
      A `ConcreteFunction` whose outputs are what `python_function` returns.
    """
    from tensorflow.core.function.polymorphism import function_type as function_type_lib
    from tensorflow.python.eager.polymorphic_function import concrete_function
    from tensorflow.python.framework import func_graph

    graph = func_graph.func_graph_from_py_func(
        "keras_luar_block",
        python_function,
        None,
        None,
        signature=input_signature,
        add_control_dependencies=False,
    )
    function_type = function_type_lib.from_structured_signature(
        graph.structured_input_signature,
        graph.structured_outputs,
        graph.function_captures.capture_types,
    )
    return concrete_function.ConcreteFunction.from_func_graph(
        graph, function_type, attributes, shared_func_graph=False
    )


def register_functions(library: Any) -> None:
    """Registers a GraphDef library's functions with the eager context (TensorFlow 2.14).

    A graph imported into a `tf.function` keeps its library functions in that
    function's graph only; a call of the function from eager code or from another
    function looks them up in the eager context. For the in-process backend's blocks.

    Args:
      library: A ``FunctionDefLibrary``.
    """
    from tensorflow.python.eager import context

    ctx = context.context()
    for function in library.function:
        if not ctx.has_function(function.signature.name):
            ctx.add_function_def(function)


def call_flat(function: Any, inputs: Sequence[Any]) -> Any:
    """Calls a `ConcreteFunction` on its flat inputs (TensorFlow 2.14's `_call_flat`).

    Skips the argument canonicalization of a ``ConcreteFunction`` call, which
    in TF 2.14 formats every input tensor as text (most of the time of a
    small block). For the in-process backend's blocks and traced rounds.

    Args:
      function: A concrete function.
      inputs: Its inputs, flat, without the captured ones.

    Returns:
      The function's flat outputs (a tensor, a list of them, or None).
    """
    return function._call_flat(inputs, function.captured_inputs)


def make_struct(names: Sequence[str | None], values: Sequence[Any]) -> tff.structure.Struct:
    """A `tff.structure.Struct` from names TFF already checked (TFF 0.87.0's private fields).

    Skips ``Struct.__init__``'s checks, for the in-process backend's traced
    rounds, which rebuild the same structures on every call.

    Args:
      names: One name (or None) per element.
      values: The elements.

    Returns:
      The structure.
    """
    struct = object.__new__(tff.structure.Struct)
    struct._element_array = tuple(values)
    struct._name_array = list(names)
    struct._name_to_index = {n: i for i, n in enumerate(names) if n is not None}
    struct._hash = None
    struct._elements_cache = None
    return struct


class _Deadline:
    """A gRPC stub's methods, each called with a deadline and without waiting for a channel."""

    def __init__(self, group: Any, timeout: float | None):
        self._group = group
        self._timeout = timeout

    def __getattr__(self, name: str) -> Callable:
        method = getattr(self._group, name)
        return lambda request: method(request, timeout=self._timeout, wait_for_ready=False)


class _Stub(_RemoteExecutorGrpcStub):
    """TFF 0.87.0's gRPC stub with a deadline on every call; disposals never raise."""

    def __init__(self, channel: grpc.Channel, timeout: float | None):
        super().__init__(channel)
        self._stub = _Deadline(self._stub, timeout)  # TFF 0.87.0's private generated stub

    def dispose(self, request):
        try:
            return super().dispose(request)
        except (grpc.RpcError, RetryableError):
            return None  # the worker is gone, and its values with it

    def dispose_executor(self, request):
        try:
            return super().dispose_executor(request)
        except (grpc.RpcError, RetryableError):
            return None


def deadline_stub(channel: grpc.Channel, timeout: float | None) -> _RemoteExecutorGrpcStub:
    """TFF's worker stub on `channel` whose calls fail after `timeout` seconds.

    For the worker pool's `RemoteExecutor`: a worker that stops answering
    fails the call (DEADLINE_EXCEEDED), which is then sent elsewhere.

    Args:
      channel: A gRPC channel to a TFF worker.
      timeout: Seconds per call; None waits forever.

    Returns:
      A ``RemoteExecutorGrpcStub`` (TFF 0.87.0) whose ``dispose`` calls never raise.
    """
    return _Stub(channel, timeout)


def run_sync(coroutine: Coroutine) -> Any:
    """Runs one of `RemoteExecutor`'s coroutines, which never suspend, to its result.

    TFF 0.87.0's ``RemoteExecutor`` blocks inside its ``async`` methods, so
    no event loop is needed (nor wanted: Jupyter already runs one).

    Args:
      coroutine: A coroutine of a ``RemoteExecutor`` or of a value it made.

    Returns:
      The coroutine's result.

    Raises:
      RuntimeError: When the coroutine suspends after all.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("A TFF RemoteExecutor call suspended; it was expected to block.")


def patch_executor_subprocess(shim: Any) -> None:
    """Makes TFF 0.87.0's executor factory start its ``worker_binary`` through `shim`.

    Args:
      shim: Stands in for the `subprocess` module there (its ``Popen`` starts the worker).
    """
    _executor_factory.subprocess = shim


def patch_grappler(wrapper: type) -> None:
    """Wraps the `tf_optimizer` of TFF 0.87.0's graph optimizations in `wrapper` (once).

    Args:
      wrapper: A class whose instances wrap TensorFlow's `tf_optimizer` module.
    """
    if not isinstance(_graph_optimizations.tf_optimizer, wrapper):
        _graph_optimizations.tf_optimizer = wrapper(_graph_optimizations.tf_optimizer)


def silence_service_manager_teardown() -> None:
    """Turns off the ``__del__`` of TFF 0.87.0's worker `ServiceManager` (at exit).

    It may run during interpreter teardown, after module globals were
    cleared, and then prints a spurious traceback; call this once the workers
    are stopped. The class is local to a function of TFF's executor factory,
    so it is found through its instances.
    """
    for obj in gc.get_objects():
        cls = type(obj)
        if cls.__name__ == "ServiceManager" and cls.__module__ == _executor_factory.__name__:
            cls.__del__ = lambda self: None


def tensor_slices(dataset: Any) -> list[Any] | None:
    """The dense tensors a `tf.data.Dataset.from_tensor_slices` dataset slices, or None.

    TensorFlow 2.14: such a dataset is a ``_TensorSliceDataset`` whose ``_tensors``
    are the sliced tensors, flat in element-spec order (for dense components, the
    tensors themselves). Its elements are exactly their slices, in order, so the
    trainer checks and counts a client given this way in one vectorized pass over
    them instead of iterating its dataset. Any other dataset (one with a
    transformation, with options, or with ragged or sparse components) gives None.
    """
    if type(dataset) is not _TensorSliceDataset:
        return None
    tensors = getattr(dataset, "_tensors", None)
    specs = tf.nest.flatten(dataset.element_spec)
    if not isinstance(tensors, list) or len(tensors) != len(specs):
        return None
    if not all(type(s) is tf.TensorSpec for s in specs):
        return None
    return tensors
