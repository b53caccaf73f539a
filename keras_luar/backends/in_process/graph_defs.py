"""GraphDef surgery: a TensorFlow block's graph renamed so that blocks share nothing.

Every block of every computation is imported into this process's one eager
context. Keras gives the functions it traces the same names in every model,
and TFF's blocks name their variables by the layer; imported as they are, two
blocks (or two copies of one) would share functions and resources.
"""

from __future__ import annotations

import copy
from typing import Any

import tensorflow as tf

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


_INIT_DEPENDENCY = "keras_luar_init"  # the control input that orders a block after its init op


def _op_name(tensor_or_control: str) -> str:
    return tensor_or_control.lstrip("^").split(":")[0]


def _closure(nodes: dict[str, Any], targets: list[str], stop: set[str]) -> set[str]:
    """The names of the nodes `targets` need (their inputs, data and control, transitively)."""
    seen: set[str] = set()
    stack = [t for t in targets if t not in stop]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(n for n in map(_op_name, nodes[name].input) if n not in stop)
    return seen


def _tensor_name(name: str) -> str:
    return name if ":" in name or name.startswith("^") else f"{name}:0"


def _subgraph(graph_def: Any, names: set[str]) -> Any:
    """The nodes of `graph_def` named in `names`, with its library.

    A colocation with a node left out (a parameter's placeholder) is dropped:
    the importer refuses one with an unknown node, and it is a placement hint.
    """
    sub = type(graph_def)()
    sub.versions.CopyFrom(graph_def.versions)
    sub.library.CopyFrom(graph_def.library)
    sub.node.extend(n for n in graph_def.node if n.name in names)
    for node in sub.node:
        if "_class" in node.attr:
            kept = [c for c in node.attr["_class"].list.s if c[len(b"loc:@") :].decode() in names]
            if kept:
                node.attr["_class"].list.s[:] = kept
            else:
                del node.attr["_class"]
    return sub


class BlockParts:
    """A block's GraphDef as two parts to import into one function: init op, then results.

    TFF's runtime runs a block as two session runs on one graph: the init op,
    then the results from the parameters; each run executes what its targets
    need and nothing else. `import_into_function` does the same in one traced
    function: it imports what the init op needs, then what the results need
    (the parameters mapped to the function's inputs), with every node of the
    second part that has no inputs ordered after the init op, so the results
    are computed from the initialized variables, as in the second run.

    Args:
      graph_def: The block's (renamed) GraphDef.
      feeds: The parameter tensors' names, in the binding's order.
      fetches: The result tensors' names, in the binding's order.
      initialize_op: The init op's name, or None.
    """

    def __init__(self, graph_def: Any, feeds: list[str], fetches: list[str], initialize_op):
        nodes = {n.name: n for n in graph_def.node}
        fed = {_op_name(f) for f in feeds}
        self.feeds = list(feeds)
        self.fetches = list(fetches)
        self.initialize_op = initialize_op
        self.input_specs = [_placeholder_spec(nodes[_op_name(f)]) for f in feeds]
        self.variables = [
            dict(
                dtype=n.attr["dtype"].type,
                shape=tf.TensorShape(n.attr["shape"].shape),
                container=n.attr["container"].s.decode(),
                shared_name=n.attr["shared_name"].s.decode(),
            )
            for n in graph_def.node
            if n.op == "VarHandleOp"
        ]
        self.init_def = None
        body = _subgraph(graph_def, _closure(nodes, [_op_name(f) for f in fetches], fed))
        if initialize_op:
            self.init_def = _subgraph(graph_def, _closure(nodes, [initialize_op], set()))
        self.stateful = bool(self.variables) or initialize_op is not None
        # Every node of the results' part that depends on nothing (variable handles,
        # constants...) waits for the init op: so does every other node.
        self._ordered = False
        if self.stateful:
            for node in body.node:
                if not node.input:
                    node.input.append(f"^{_INIT_DEPENDENCY}")
                    self._ordered = True
        self.body_def = body
        # Parameters the results do not need are taken and not used (the importer
        # refuses to map a tensor nothing reads).
        read = {_tensor_name(i) for node in body.node for i in node.input}
        self._used = [_tensor_name(f) in read for f in feeds]
        self._passed = {f for f in fetches if _op_name(f) in fed}
        self._imported = [f for f in fetches if f not in self._passed]

    def import_into_function(self, inputs: list, after: list) -> list:
        """Imports the block into the function being traced; returns its result tensors.

        The function is traced without automatic control dependencies (see
        `keras_luar._tff_internals.graph_function`): the order comes from the
        GraphDef's own control edges and the ones added here.

        Args:
          inputs: One tensor per parameter tensor (variants for datasets).
          after: Ops that must run before the block (with its init op).

        Returns:
          The result tensors, in the binding's order.
        """
        input_map = {
            f: t for f, t, used in zip(self.feeds, inputs, self._used, strict=True) if used
        }
        if self._ordered:
            after = list(after)
            if self.init_def is not None:
                (init,) = tf.graph_util.import_graph_def(
                    self.init_def, return_elements=[self.initialize_op], name="init"
                )
                after.append(init)
            # The importer remaps a control input to the op of a tensor: one made after.
            with tf.control_dependencies(after):
                input_map[f"^{_INIT_DEPENDENCY}"] = tf.constant(0, name="initialized")
        imported = iter(
            tf.graph_util.import_graph_def(
                self.body_def, input_map=input_map, return_elements=self._imported, name="block"
            )
        )
        # A result bound to a parameter's placeholder is that parameter.
        fed = dict(zip(map(_tensor_name, self.feeds), inputs, strict=True))
        return [
            fed.get(_tensor_name(f)) if f in self._passed else next(imported) for f in self.fetches
        ]


def _placeholder_spec(node: Any) -> tuple[tf.TensorShape, tf.DType]:
    if node.op not in ("Placeholder", "PlaceholderWithDefault"):
        raise NotImplementedError(
            f"A TensorFlow block's parameter is bound to a {node.op} node ({node.name}); the "
            "in-process backend takes parameters bound to placeholders only."
        )
    shape = tf.TensorShape(None)
    if "shape" in node.attr:
        shape = tf.TensorShape(node.attr["shape"].shape)
    return shape, tf.dtypes.as_dtype(node.attr["dtype"].type)
