"""Runs TFF computations in this Python process's TensorFlow runtime (CPU or GPU).

TFF 0.87 executes every computation in its C++ ``worker_binary``, which is
built without CUDA. `InProcessContext` is a TFF execution context that runs
the very same computations here instead:

1. It compiles a computation as TFF's native C++ context does, once per
   computation: intrinsics such as the weighted mean become
   ``federated_aggregate`` over TensorFlow blocks, and the whole is brought
   to call-dominant form. TFF's context also runs a static, aggressive
   Grappler pass over every block and then switches Grappler off inside
   them; here TensorFlow's own function optimizer runs instead, as for any
   `tf.function`, which made local training about 10 % faster on a CPU
   (``tff_grappler=True`` restores TFF's pass).
2. It walks the compiled building blocks in Python. Federated values are
   plain Python values: one value at the server, a list with one entry per
   client at the clients. The handful of intrinsics left after desugaring
   (broadcast, map, apply, zip, aggregate, value) are a few lines each, with
   the C++ runtime's semantics (``federated_aggregate`` accumulates the
   clients in order, from ``zero``).
3. Each TensorFlow block (local training, the LUAR server step, ...) is
   imported once into a `tf.compat.v1.wrap_function` and pruned to its
   parameter and result bindings: a concrete function that is never retraced.
   Tensors stay where TensorFlow placed them (on the GPU when there is one)
   between the blocks of a call; client datasets are handed over as dataset
   variants, so no data is serialized or copied per round.
4. By default the walk of step 2 is itself traced, once per computation and
   number of clients, into one `tf.function` that calls the blocks' concrete
   functions in the walk's order. A round is then one TensorFlow call: the
   Python walk, the ~10 small per-client aggregation blocks and their call
   overheads are gone from the round time. TensorFlow runs a function's
   stateful calls in program order, so the blocks run in the order the Python
   walk runs them, each client's variables initialized before its call; the
   result is the same as the walk's, bit for bit (``trace=False`` keeps the
   walk, which the worker pool uses). With ``parallel_clients=N`` client i
   runs on copy i mod N of a block's variables; each copy's calls are ordered
   by a variable of its own, and calls on different copies, which share
   nothing, may run at the same time.

Nothing here knows about any algorithm: every method runs through it
unchanged, which is what makes the two execution paths agree.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import itertools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.native import compiler as native_compiler
from tensorflow_federated.python.core.environments.tensorflow_backend import (
    tensorflow_tree_transformations,
)
from tensorflow_federated.python.core.impl.compiler import building_blocks as bb
from tensorflow_federated.python.core.impl.compiler import transformations
from tensorflow_federated.python.core.impl.types import type_conversions
from tensorflow_federated.python.core.impl.utils import tensorflow_utils
from tensorflow_federated.python.tensorflow_libs import serialization_utils

from keras_luar._validation import check_int

Struct = tff.structure.Struct
_ids = itertools.count()


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
        self._embedded: dict[tuple, tuple[Any, _Embedded]] = {}  # (block, thread, copy)
        self._traced: dict[tuple, tuple[Any, Any]] = {}  # (comp, signature) -> (comp, _Traced)

    def invoke(self, comp: Any, arg: Any) -> Any:
        """Runs `comp` on `arg`; returns what TFF's C++ context would return."""
        type_signature = comp.type_signature
        block = self._compile(comp)
        parameter = type_signature.parameter
        value = None
        num_clients = 0
        if parameter is not None:
            num_clients = _cardinality(arg, parameter)
            value = _ingest(arg, parameter, num_clients)
        with tf.device(self._device) if self._device else contextlib.nullcontext():
            leaves, spec = _flatten(value)
            traced = self._traced_function(comp, block, leaves, spec, num_clients)
            if traced is not None:
                result = traced(leaves)
            else:
                function = _Evaluator(self, num_clients, self._pool).evaluate(block, {})
                result = function(value)
        return _to_python(result, type_signature.result)

    def _traced_function(self, comp, block, leaves, spec, num_clients) -> _Traced | None:
        """`comp` traced for arguments of this nesting and these leaf types.

        None when tracing is off or the computation cannot be traced.
        """
        if not self._trace:
            return None
        signature = tuple(_leaf_signature(v) for v in leaves)
        key = (id(comp), num_clients, spec, signature)
        cached = self._traced.get(key)
        if cached is None or cached[0] is not comp:
            traced = _Traced.build(self, block, num_clients, signature, spec)
            cached = self._traced[key] = (comp, traced)
        return cached[1]

    def _compile(self, comp):
        key = id(comp)
        cached = self._compiled.get(key)
        if cached is None or cached[0] is not comp:
            if self._tff_grappler:
                block = native_compiler.desugar_and_transform_to_native(comp).to_building_block()
            else:
                block, _ = tensorflow_tree_transformations.replace_intrinsics_with_bodies(
                    comp.to_building_block()
                )
                block = transformations.to_call_dominant(block)
            cached = self._compiled[key] = (comp, block)
        return cached[1]

    def embedded(self, block: bb.CompiledComputation, copy: int = 0) -> _Embedded:
        """The concrete function of a TensorFlow block (built on first use, per thread).

        A block's variables are named resources that live for one call, so two
        clients training at once (in different threads, or as different
        `copy` numbers in one traced round) need copies of their own.
        """
        key = (id(block), threading.get_ident(), copy)
        cached = self._embedded.get(key)
        if cached is None or cached[0] is not block:
            with tf.init_scope():  # eagerly, also when first met while tracing
                embedded = _embed(block)
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
        """Runs the block on copy number `copy` of its variables."""
        return self.context.embedded(self.block, copy)(argument)


class _Traced:
    """One computation, for one number of clients, as a single concrete function.

    The evaluator's walk runs once, while tracing: every block call becomes a
    call op in one graph, and a round is then one TensorFlow call. The blocks'
    variables are destroyed after the call, as the walk destroys them after
    each block call.
    """

    def __init__(self, function, result_spec, embedded):
        self._function = function
        self._result_spec = result_spec
        self._embedded = embedded

    @classmethod
    def build(cls, context, block, num_clients, signature, spec) -> _Traced | None:
        if any(s is None for s in signature):
            return None
        found: dict[str, Any] = {}
        used: list[_Embedded] = []

        def body(*flat):
            value = _unflatten(spec, iter(flat))
            with _recording(used):
                result = _Evaluator(context, num_clients).evaluate(block, {})(value)
            out, found["spec"] = _flatten(result)
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
        """Runs the round on the leaves of its argument (as `_flatten` lists them)."""
        inputs = [
            tf.data.experimental.to_variant(v) if isinstance(v, tf.data.Dataset) else v
            for v in leaves
        ]
        outputs = self._function._call_flat(inputs, self._function.captured_inputs)
        for embedded in self._embedded:
            embedded.destroy()
        if outputs is None:
            outputs = []
        elif tf.is_tensor(outputs):
            outputs = [outputs]
        return _unflatten(self._result_spec, iter(outputs))


class _Untraceable(Exception):
    """A computation whose result is not all tensors; it is walked instead."""


_recorder = threading.local()


@contextlib.contextmanager
def _recording(used: list):
    previous = getattr(_recorder, "used", None)
    _recorder.used = used
    try:
        yield
    finally:
        _recorder.used = previous


def _leaf_signature(value: Any) -> tf.TensorSpec | None:
    if isinstance(value, tf.data.Dataset):
        return tf.TensorSpec([], tf.variant)
    if tf.is_tensor(value):
        return tf.TensorSpec(value.shape, value.dtype)
    return None


def _flatten(value: Any) -> tuple[list, Any]:
    """The leaves of an evaluator value and a hashable description of its nesting."""
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


def _unflatten(spec: Any, leaves: Any) -> Any:
    kind = spec[0]
    if kind == "struct":
        return _struct(spec[1], [_unflatten(s, leaves) for s in spec[2]])
    if kind == "list":
        return [_unflatten(s, leaves) for s in spec[1]]
    if kind == "none":
        return None
    return next(leaves)


def _struct(names: tuple, values: list) -> Struct:
    """A `Struct` from names TFF already checked, without `Struct.__init__`'s checks."""
    struct = object.__new__(Struct)
    struct._element_array = tuple(values)
    struct._name_array = list(names)
    struct._name_to_index = {n: i for i, n in enumerate(names) if n is not None}
    struct._hash = None
    struct._elements_cache = None
    return struct


# ---- values in, values out ---------------------------------------------------------------


def _cardinality(arg: Any, type_spec: Any) -> int:
    """The number of clients: the length of the first CLIENTS-placed list in `arg`."""
    if isinstance(type_spec, tff.FederatedType):
        if type_spec.placement is tff.CLIENTS and not type_spec.all_equal:
            return len(arg)
        return 0
    if isinstance(type_spec, tff.StructType):
        elements = tff.structure.to_elements(tff.structure.from_container(arg))
        for (_, value), (_, element_type) in zip(
            elements, tff.structure.iter_elements(type_spec), strict=True
        ):
            found = _cardinality(value, element_type)
            if found:
                return found
    return 0


def _ingest(value: Any, type_spec: Any, num_clients: int) -> Any:
    """Converts a Python argument to the evaluator's representation of `type_spec`."""
    if isinstance(type_spec, tff.FederatedType):
        member = type_spec.member
        if type_spec.placement is tff.CLIENTS:
            if type_spec.all_equal:
                return [_ingest(value, member, num_clients)] * num_clients
            return [_ingest(v, member, num_clients) for v in value]
        return _ingest(value, member, num_clients)
    if isinstance(type_spec, tff.StructType):
        elements = tff.structure.to_elements(tff.structure.from_container(value))
        return Struct(
            (name, _ingest(v, t, num_clients))
            for (_, v), (name, t) in zip(
                elements, tff.structure.iter_elements(type_spec), strict=True
            )
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


def _to_numpy(value: Any) -> Any:
    if isinstance(value, Struct):
        return Struct((n, _to_numpy(v)) for n, v in tff.structure.iter_elements(value))
    if isinstance(value, list):
        return [_to_numpy(v) for v in value]
    if isinstance(value, tf.Tensor):
        return value.numpy()
    return value


def _to_python(value: Any, type_spec: Any) -> Any:
    if isinstance(type_spec, tff.FederatedType) and type_spec.all_equal:
        if type_spec.placement is tff.CLIENTS and isinstance(value, list):
            value = value[0] if value else None
    return type_conversions.type_to_py_container(_to_numpy(value), type_spec)


# ---- the building blocks --------------------------------------------------------------------


class _Evaluator:
    """Evaluates compiled building blocks; federated values are plain Python values."""

    def __init__(self, context: InProcessContext, num_clients: int, pool=None):
        self._context = context
        self._num_clients = num_clients
        self._pool = pool

    def evaluate(self, block: Any, env: dict[str, Any]) -> Any:
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


# ---- TensorFlow blocks --------------------------------------------------------------------


def _rename_functions(graph_def: Any, prefix: str) -> None:
    """Gives the library functions of `graph_def` names no other block uses.

    Imported functions are registered in the process-wide eager context, where
    two blocks' different functions of one name (Keras names them the same in
    every model it traces) would collide.
    """
    mapping = {f.signature.name: f"{prefix}_{f.signature.name}" for f in graph_def.library.function}
    if not mapping:
        return

    def fix_func(func):
        func.name = mapping.get(func.name, func.name)
        for value in func.attr.values():
            fix_attr(value)

    def fix_attr(value):
        if value.HasField("func"):
            fix_func(value.func)
        elif value.HasField("list"):
            for func in value.list.func:
                fix_func(func)

    def fix_node(node):
        node.op = mapping.get(node.op, node.op)
        for value in node.attr.values():
            fix_attr(value)

    for node in graph_def.node:
        fix_node(node)
    for function in graph_def.library.function:
        function.signature.name = mapping[function.signature.name]
        for node in function.node_def:
            fix_node(node)
    for gradient in graph_def.library.gradient:
        gradient.function_name = mapping.get(gradient.function_name, gradient.function_name)
        gradient.gradient_func = mapping.get(gradient.gradient_func, gradient.gradient_func)


def _graph_def(block: bb.CompiledComputation, prefix: str) -> Any:
    """The block's GraphDef, its resources and functions named so that no other block shares them."""
    tensorflow = block.proto.tensorflow
    graph_def = serialization_utils.unpack_graph_def(tensorflow.graph_def)
    graph_def = copy.deepcopy(graph_def)
    _rename_functions(graph_def, prefix)
    for node in graph_def.node:
        if node.op in ("VarHandleOp", "HashTableV2", "MutableHashTableV2"):
            node.attr["shared_name"].s = f"{prefix}/{node.name}".encode()
    return graph_def


def _embed(block: bb.CompiledComputation) -> _Embedded:
    """The block as one pruned concrete function (plus its init function)."""
    tensorflow = block.proto.tensorflow
    type_signature = block.type_signature
    parameter_type = type_signature.parameter
    graph_def = _graph_def(block, f"keras_luar_{next(_ids)}")

    def import_graph():
        return tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, signature=[])
    graph = wrapped.graph
    feeds = []
    if parameter_type is not None:
        feeds = tensorflow_utils.extract_tensor_names_from_binding(tensorflow.parameter)
    fetches = tensorflow_utils.extract_tensor_names_from_binding(tensorflow.result)
    function = wrapped.prune(
        feeds=[graph.as_graph_element(n) for n in feeds],
        fetches=[graph.as_graph_element(n) for n in fetches],
    )
    # TFF's runtime runs the init op (variable initializers) before the result, in
    # the same session; here a second pruned function runs it first, on the same
    # resources (they are found by their shared names).
    initialize = None
    if tensorflow.initialize_op:
        initialize = wrapped.prune(
            feeds=[], fetches=[graph.get_operation_by_name(tensorflow.initialize_op)]
        )
    handles = [op.outputs[0] for op in graph.get_operations() if op.type == "VarHandleOp"]
    resources = wrapped.prune(feeds=[], fetches=handles)() if handles else []
    param_kinds = []
    if parameter_type is not None:
        param_kinds = [isinstance(t, tff.SequenceType) for t in _flat_types(parameter_type)]
    return _Embedded(function, initialize, resources, param_kinds, type_signature)


class _Embedded:
    """Runs one embedded block: eagerly, or as call ops while a computation is traced."""

    __slots__ = (
        "_function", "_initialize", "_resources", "_param_kinds", "_type", "_call_op", "_token",
    )  # fmt: skip

    def __init__(self, function, initialize, resources, param_kinds, type_signature):
        self._function = function
        self._initialize = initialize
        self._resources = list(resources)
        self._param_kinds = param_kinds
        self._type = type_signature
        self._call_op = None
        self._token = None

    def __call__(self, argument: Any) -> Any:
        if self._type.parameter is None:
            inputs = []
        else:
            leaves = tff.structure.flatten(argument)
            inputs = [
                tf.data.experimental.to_variant(v)
                if is_sequence and isinstance(v, tf.data.Dataset)
                else v
                for v, is_sequence in zip(leaves, self._param_kinds, strict=True)
            ]
        if tf.inside_function():
            # Traced: the block becomes one call op; the traced function destroys
            # the variables after its call.
            call_op = self._graph_function()
            if self._token is not None:
                inputs = [*inputs, self._token.handle]
            outputs = call_op._call_flat(inputs, call_op.captured_inputs)
            used = getattr(_recorder, "used", None)
            if used is not None and self._resources:
                used.append(self)
        else:
            self._run_initializer()
            # `_call_flat` skips the argument canonicalization of a ConcreteFunction
            # call, which in TF 2.14 formats every input tensor as text (most of the
            # time of a small block).
            outputs = self._function._call_flat(inputs, self._function.captured_inputs)
            self.destroy()
        result_type = self._type.result
        if isinstance(result_type, tff.TensorType):
            return outputs[0] if isinstance(outputs, list | tuple) else outputs
        if tf.is_tensor(outputs):
            outputs = [outputs]
        return tff.structure.pack_sequence_as(result_type, list(outputs or []))

    def _run_initializer(self) -> None:
        if self._initialize is not None:
            self._initialize._call_flat([], self._initialize.captured_inputs)

    def _graph_function(self):
        """Init op and block as one function; never inlined if it has variables.

        Inlined, a block's side effects that feed none of its results (TFF's
        blocks list no control outputs) could overlap the next client's init op
        on the same variables. A call that is not inlined ends only when its
        whole body has run, so chained calls run one after the other, as in the
        walk; the kernels and their order are the walk's, so are the results
        (``tests/test_backends.py`` checks they are bit for bit the same).
        """
        if self._call_op is None:
            function = self._function
            # A block without variables is a pure function: TensorFlow may inline
            # it into the round (which saves a call per client and block).
            stateful = bool(self._resources) or self._initialize is not None
            specs = [tf.TensorSpec(t.shape, t.dtype) for t in function.inputs]
            specs = specs[: len(specs) - len(function.captured_inputs)]

            if stateful:
                # The call writes to a variable of its own, so a traced round orders
                # the calls of this copy by it (and no others: two copies, and two
                # blocks, share no variables).
                with tf.init_scope():
                    self._token = tf.Variable(0, dtype=tf.int64, trainable=False)
                specs.append(tf.TensorSpec([], tf.resource))

            def call(*inputs):
                inputs = list(inputs)
                if stateful:
                    token = inputs.pop()
                    tf.raw_ops.AssignAddVariableOp(resource=token, value=tf.constant(1, tf.int64))
                self._run_initializer()
                return function._call_flat(inputs, function.captured_inputs)

            with tf.init_scope():
                self._call_op = tf.function(
                    call,
                    input_signature=specs,
                    autograph=False,
                    experimental_attributes={"_noinline": stateful},
                ).get_concrete_function()
        return self._call_op

    def destroy(self) -> None:
        """Frees the block's variables; they live for one call, as in TFF's runtime."""
        for resource in self._resources:
            tf.raw_ops.DestroyResourceOp(resource=resource, ignore_lookup_error=True)


def _flat_types(type_spec: Any) -> list[Any]:
    if isinstance(type_spec, tff.StructType):
        return [t for _, e in tff.structure.iter_elements(type_spec) for t in _flat_types(e)]
    return [type_spec]
