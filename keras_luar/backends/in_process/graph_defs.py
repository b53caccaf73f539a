"""GraphDef surgery: a TensorFlow block's graph renamed so that blocks share nothing.

Every block of every computation is imported into this process's one eager
context. Keras gives the functions it traces the same names in every model,
and TFF's blocks name their variables by the layer; imported as they are, two
blocks (or two copies of one) would share functions and resources.
"""

from __future__ import annotations

import copy
from typing import Any

from keras_luar import _tff_internals
from keras_luar._tff_internals import building_blocks as bb

# Ops whose resources are found by their shared name: renamed per block copy.
_SHARED_NAME_OPS = ("VarHandleOp", "HashTableV2", "MutableHashTableV2")


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


def unique_graph_def(block: bb.CompiledComputation, prefix: str) -> Any:
    """The block's GraphDef, its resources and functions named so that no other block shares them.

    Args:
      block: A TensorFlow block of a compiled computation.
      prefix: A prefix no other imported block uses.

    Returns:
      A copy of the block's GraphDef with the functions and the shared names
      of its resources prefixed.
    """
    graph_def = _tff_internals.unpack_graph_def(block.proto.tensorflow.graph_def)
    graph_def = copy.deepcopy(graph_def)
    _rename_functions(graph_def, prefix)
    for node in graph_def.node:
        if node.op in _SHARED_NAME_OPS:
            node.attr["shared_name"].s = f"{prefix}/{node.name}".encode()
    return graph_def
