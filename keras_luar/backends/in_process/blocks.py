"""TensorFlow blocks run in process: each one concrete function, built once, never retraced.

A block (local training, the LUAR server step, ...) is a TFF ``GraphDef`` with
an init op (its variables' initializers), a parameter binding and a result
binding. TFF's runtime runs it as two session runs: the init op, then the
results from the parameters. Here the block becomes one function that imports
the init op's part of the graph and then, ordered after it, the part the
results need, with the parameters mapped to the function's inputs
(`keras_luar.backends.in_process.graph_defs.BlockParts`). Tensors stay where
TensorFlow placed them (on the GPU when there is one) between the blocks of a
call; client datasets are handed over as dataset variants, so no data is
serialized or copied per round. A block's variables live for one call, as in
TFF's runtime.

Nothing is copied or pruned in Python: a first round in process used to spend
about a second pruning each block's imported graph three times (its results,
its init op, its variable handles), and each client's training then ran as
three nested function calls instead of one.
"""

from __future__ import annotations

import itertools
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import _tff_internals
from keras_luar._tff_internals import building_blocks as bb
from keras_luar.backends.in_process.graph_defs import BlockParts, unique_graph_def
from keras_luar.backends.in_process.tracing import record_call
from keras_luar.backends.in_process.values import flat_types

_ids = itertools.count()


def embed(block: bb.CompiledComputation) -> Embedded:
    """The block as one concrete function (init op, then results).

    Args:
      block: A TensorFlow block of a compiled computation.

    Returns:
      The block, ready to run on the interpreter's values.
    """
    tensorflow = block.proto.tensorflow
    type_signature = block.type_signature
    parameter_type = type_signature.parameter
    graph_def = unique_graph_def(block, f"keras_luar_{next(_ids)}")
    feeds = []
    if parameter_type is not None:
        feeds = _tff_internals.extract_tensor_names_from_binding(tensorflow.parameter)
    fetches = _tff_internals.extract_tensor_names_from_binding(tensorflow.result)
    parts = BlockParts(graph_def, feeds, fetches, tensorflow.initialize_op or None)
    param_kinds = []
    if parameter_type is not None:
        param_kinds = [isinstance(t, tff.SequenceType) for t in flat_types(parameter_type)]
    return Embedded(parts, param_kinds, type_signature)


class Embedded:
    """Runs one embedded block: eagerly, or as a call op while a computation is traced.

    Make one with `embed`.

    Args:
      parts: The block's `keras_luar.backends.in_process.graph_defs.BlockParts`.
      param_kinds: For each flat parameter, whether it is a dataset.
      type_signature: The block's TFF type.
    """

    __slots__ = ("_parts", "_param_kinds", "_type", "_function", "_token", "_resources")

    def __init__(self, parts: Any, param_kinds: list[bool], type_signature: Any):
        self._parts = parts
        self._param_kinds = param_kinds
        self._type = type_signature
        self._function = None
        self._token = None
        # Handles of the block's variables (found by their shared names), to free them.
        self._resources = [tf.raw_ops.VarHandleOp(**attrs) for attrs in parts.variables]

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
        function = self._concrete_function()
        if self._token is not None:
            inputs = [*inputs, self._token.handle]
        outputs = _tff_internals.call_flat(function, inputs)
        if tf.inside_function():
            # Traced: the traced computation destroys the variables after its call.
            if self._resources:
                record_call(self)
        else:
            self.destroy()
        result_type = self._type.result
        if isinstance(result_type, tff.TensorType):
            return outputs[0] if isinstance(outputs, list | tuple) else outputs
        if tf.is_tensor(outputs):
            outputs = [outputs]
        return tff.structure.pack_sequence_as(result_type, list(outputs or []))

    def _concrete_function(self):
        """Init op and block as one function; never inlined if it has variables.

        Inlined, a block's side effects that feed none of its results (TFF's
        blocks list no control outputs) could overlap the next client's init op
        on the same variables. A call that is not inlined ends only when its
        whole body has run, so chained calls run one after the other, as in the
        walk; the kernels and their order are the walk's, so are the results
        (``tests/backends/test_backends.py`` checks they are bit for bit the same).
        """
        if self._function is None:
            parts = self._parts
            stateful = parts.stateful
            specs = [tf.TensorSpec(shape, dtype) for shape, dtype in parts.input_specs]
            if stateful:
                # The call writes to a variable of its own, so a traced round orders
                # the calls of this copy by it (and no others: two copies, and two
                # blocks, share no variables).
                with tf.init_scope():
                    self._token = tf.Variable(0, dtype=tf.int64, trainable=False)
                specs.append(tf.TensorSpec([], tf.resource))

            def call(*inputs):
                inputs = list(inputs)
                after = []
                if stateful:
                    token = inputs.pop()
                    one = tf.constant(1, tf.int64)
                    after.append(tf.raw_ops.AssignAddVariableOp(resource=token, value=one))
                return parts.import_into_function(inputs, after=after)

            with tf.init_scope():
                _tff_internals.register_functions(parts.body_def.library)
                self._function = _tff_internals.graph_function(call, specs, {"_noinline": stateful})
        return self._function

    def destroy(self) -> None:
        """Frees the block's variables; they live for one call, as in TFF's runtime."""
        for resource in self._resources:
            tf.raw_ops.DestroyResourceOp(resource=resource, ignore_lookup_error=True)
