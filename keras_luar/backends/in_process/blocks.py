"""TensorFlow blocks run in process: each one a pruned concrete function, never retraced.

A block (local training, the LUAR server step, ...) is imported once into a
`tf.compat.v1.wrap_function` and pruned to its parameter and result bindings.
Tensors stay where TensorFlow placed them (on the GPU when there is one)
between the blocks of a call; client datasets are handed over as dataset
variants, so no data is serialized or copied per round. A block's variables
live for one call, as in TFF's runtime.
"""

from __future__ import annotations

import itertools
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import _tff_internals
from keras_luar._tff_internals import building_blocks as bb
from keras_luar.backends.in_process.graph_defs import unique_graph_def
from keras_luar.backends.in_process.tracing import record_call
from keras_luar.backends.in_process.values import flat_types

_ids = itertools.count()


def embed(block: bb.CompiledComputation) -> Embedded:
    """The block as one pruned concrete function (plus its init function).

    Args:
      block: A TensorFlow block of a compiled computation.

    Returns:
      The block, ready to run on the interpreter's values.
    """
    tensorflow = block.proto.tensorflow
    type_signature = block.type_signature
    parameter_type = type_signature.parameter
    graph_def = unique_graph_def(block, f"keras_luar_{next(_ids)}")

    def import_graph():
        return tf.graph_util.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, signature=[])
    graph = wrapped.graph
    feeds = []
    if parameter_type is not None:
        feeds = _tff_internals.extract_tensor_names_from_binding(tensorflow.parameter)
    fetches = _tff_internals.extract_tensor_names_from_binding(tensorflow.result)
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
        param_kinds = [isinstance(t, tff.SequenceType) for t in flat_types(parameter_type)]
    return Embedded(function, initialize, resources, param_kinds, type_signature)


class Embedded:
    """Runs one embedded block: eagerly, or as call ops while a computation is traced.

    Make one with `embed`.

    Args:
      function: The block's pruned concrete function.
      initialize: The pruned concrete function of its init op, or None.
      resources: The handles of its variables.
      param_kinds: For each flat parameter, whether it is a dataset.
      type_signature: The block's TFF type.
    """

    __slots__ = (
        "_function", "_initialize", "_resources", "_param_kinds", "_type", "_call_op", "_token",
    )  # fmt: skip

    def __init__(
        self,
        function: Any,
        initialize: Any,
        resources: list[Any],
        param_kinds: list[bool],
        type_signature: Any,
    ):
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
            outputs = _tff_internals.call_flat(call_op, inputs)
            if self._resources:
                record_call(self)
        else:
            self._run_initializer()
            outputs = _tff_internals.call_flat(self._function, inputs)
            self.destroy()
        result_type = self._type.result
        if isinstance(result_type, tff.TensorType):
            return outputs[0] if isinstance(outputs, list | tuple) else outputs
        if tf.is_tensor(outputs):
            outputs = [outputs]
        return tff.structure.pack_sequence_as(result_type, list(outputs or []))

    def _run_initializer(self) -> None:
        if self._initialize is not None:
            _tff_internals.call_flat(self._initialize, [])

    def _graph_function(self):
        """Init op and block as one function; never inlined if it has variables.

        Inlined, a block's side effects that feed none of its results (TFF's
        blocks list no control outputs) could overlap the next client's init op
        on the same variables. A call that is not inlined ends only when its
        whole body has run, so chained calls run one after the other, as in the
        walk; the kernels and their order are the walk's, so are the results
        (``tests/backends/test_backends.py`` checks they are bit for bit the same).
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
                return _tff_internals.call_flat(function, inputs)

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
