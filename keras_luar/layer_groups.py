"""FedPart's layer groups: a Keras model's trainable variables split in depth order.

A layer with a trainable variable of rank >= 2 (convolution, dense, embedding, a
whole `MultiHeadAttention`) starts a group; a layer with only rank <= 1 trainable
variables (BatchNorm, LayerNorm) joins the group of the layer that feeds it. A
1×1 projection convolution with its BatchNorm is its own group. Groups are read off
the Keras graph (never from variable names); the graph's private attributes are
read through `keras_luar._keras_compat`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_luar._keras_compat import inbound_layers, is_functional, output_layers
from keras_luar._validation import check_built_model


@dataclasses.dataclass(frozen=True)
class LayerGroup:
    """A set of trainable variables that FedPart trains together.

    Attributes:
      name: A readable name: the path of the layer that starts the group
        (``"block/conv"`` inside a nested model), or the entries of an
        explicit group joined by ``+``.
      indices: Positions in ``model.trainable_variables`` (the order of TFF's
        ``ModelWeights.trainable``), ascending.
    """

    name: str
    indices: tuple[int, ...]


GroupSpec = Sequence[str | int]


def layer_groups(
    model: tf.keras.Model, groups: Sequence[GroupSpec] | None = None
) -> list[LayerGroup]:
    """Splits a Keras model's trainable variables into FedPart's layer groups.

    Without `groups`, the layers are walked in the model's order (nested
    Sequential and functional models are walked inside). A layer owning a
    trainable variable of rank >= 2 starts a new group with all its trainable
    variables; a layer with only rank <= 1 trainable variables joins the group
    of the layer feeding it (in a functional model the deepest group among its
    inputs, looking through layers without variables such as Add or ReLU); such
    layers ahead of every group join the first group. A subclassed model's
    layers are taken in the order Keras lists them (the order of assignment),
    each fed by the one before. Variables are matched by identity, so names
    play no part.

    Args:
      model: A built `tf.keras.Model`.
      groups: Optional explicit groups, in training order: each a list of
        variable names (``"dense/kernel"``, with or without ``:0``), layer names
        or paths (all trainable variables of the layer), or indices into
        ``model.trainable_variables``.

    Returns:
      A list of `LayerGroup` in depth (or the given) order; every trainable
      variable is in exactly one group.

    Raises:
      TypeError: If `model` is not a Keras model or an entry of `groups` is
        neither a string nor an int.
      ValueError: If the model is unbuilt or has no trainable variable, a
        variable cannot be placed in a group, or explicit groups are empty,
        name something unknown or ambiguous, repeat a variable or miss one.

    Examples:
      >>> import tensorflow as tf
      >>> model = tf.keras.Sequential([
      ...     tf.keras.Input((8, 8, 1)),
      ...     tf.keras.layers.Conv2D(4, 3, name="conv"),
      ...     tf.keras.layers.BatchNormalization(name="bn"),
      ...     tf.keras.layers.Flatten(),
      ...     tf.keras.layers.Dense(2, name="head")])
      >>> [(g.name, g.indices) for g in layer_groups(model)]
      [('conv', (0, 1, 2, 3)), ('head', (4, 5))]

    References:
      Wang et al., "Why Go Full? Elevating Federated Learning Through Partial
      Network Updates", NeurIPS 2024.
    """
    check_built_model(model)
    variables = list(model.trainable_variables)
    if not variables:
        raise ValueError(
            "Invalid value for argument `model`. Expected a model with trainable "
            "variables. Received: a model without any"
        )
    if groups is not None:
        return _explicit_groups(model, variables, groups)
    walker = _GroupWalker({v.ref(): i for i, v in enumerate(variables)})
    walker.walk(model, None, "")
    return walker.finish(variables)


class _GroupWalker:
    """Assigns variables to groups while walking a model's layers."""

    def __init__(self, index: dict):
        self.index = index  # variable ref -> position in model.trainable_variables
        self.placed: set = set()
        self.names: list[str] = []
        self.members: list[list[int]] = []
        self.pending: list[tuple[str, list[int]]] = []  # rank<=1 layers ahead of any group

    def walk(self, model: tf.keras.Model, entry: int | None, prefix: str) -> int | None:
        """Walks `model`'s layers; returns the group whose output the model returns."""
        if isinstance(model, tf.keras.Sequential) or not is_functional(model):
            # A chain (Sequential, or a subclassed model in attribute order): each
            # layer is fed by the one before.
            current = entry
            for layer in model.layers:
                current = self.visit(layer, current, prefix)
            return current
        # Functional: topological order, inputs followed through the model's graph.
        output_group: dict[int, int | None] = {}
        for layer in model.layers:
            if isinstance(layer, tf.keras.layers.InputLayer):
                output_group[id(layer)] = entry
                continue
            inputs = [
                output_group.get(id(inbound), entry) for inbound in inbound_layers(model, layer)
            ]
            known = [g for g in inputs if g is not None]
            feeding = max(known) if known else None
            output_group[id(layer)] = self.visit(layer, feeding, prefix)
        outputs = [output_group.get(id(layer)) for layer in output_layers(model)]
        known = [g for g in outputs if g is not None]
        return max(known) if known else None

    def visit(self, layer: tf.keras.layers.Layer, feeding: int | None, prefix: str) -> int | None:
        """Places `layer`'s variables; returns the group of its output."""
        if isinstance(layer, tf.keras.Model):
            return self.walk(layer, feeding, f"{prefix}{layer.name}/")
        own = []
        for v in layer.trainable_variables:
            ref = v.ref()
            # A variable shared by several layers belongs to the first that uses it.
            if ref in self.index and ref not in self.placed:
                self.placed.add(ref)
                own.append(v)
        if not own:
            return feeding
        indices = [self.index[v.ref()] for v in own]
        if any((v.shape.rank or 0) >= 2 for v in own):
            self.names.append(prefix + layer.name)
            self.members.append(indices)
            return len(self.members) - 1
        if feeding is None:
            self.pending.append((prefix + layer.name, indices))
            return None
        self.members[feeding].extend(indices)
        return feeding

    def finish(self, variables: list[tf.Variable]) -> list[LayerGroup]:
        """Adds the pending layers to the first group and checks that all are placed."""
        if self.pending:
            leading = [i for _, ix in self.pending for i in ix]
            if self.members:
                self.members[0].extend(leading)
            else:  # No variable of rank >= 2 anywhere: one group holds everything.
                self.names.append(self.pending[0][0])
                self.members.append(leading)
        missing = [v for v in variables if v.ref() not in self.placed]
        if missing:
            raise ValueError(
                "layer_groups: could not place trainable variable(s) "
                f"{[v.name for v in missing]} in a layer group: no layer of the model owns "
                "them (e.g. a variable created directly on a subclassed model). Pass "
                "explicit `groups` instead."
            )
        names = _unique_names(self.names)
        return [
            LayerGroup(name, tuple(sorted(ix)))
            for name, ix in zip(names, self.members, strict=True)
        ]


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}#{k}")
    return out


def _layer_paths(
    model: tf.keras.Model, prefix: str = ""
) -> list[tuple[str, tf.keras.layers.Layer]]:
    out = []
    for layer in model.layers:
        out.append((prefix + layer.name, layer))
        if isinstance(layer, tf.keras.Model):
            out.extend(_layer_paths(layer, f"{prefix}{layer.name}/"))
    return out


def _explicit_groups(
    model: tf.keras.Model, variables: list[tf.Variable], groups: Sequence[GroupSpec]
) -> list[LayerGroup]:
    index = {v.ref(): i for i, v in enumerate(variables)}
    by_var_name: dict[str, list[int]] = collections.defaultdict(list)
    for i, v in enumerate(variables):
        for name in {v.name, v.name[:-2] if v.name.endswith(":0") else v.name}:
            by_var_name[name].append(i)
    by_layer: dict[str, list[list[int]]] = collections.defaultdict(list)
    for path, layer in _layer_paths(model):
        ix = [index[v.ref()] for v in layer.trainable_variables if v.ref() in index]
        by_layer[path].append(ix)
        if path != layer.name:
            by_layer[layer.name].append(ix)

    def resolve(entry: str | int) -> list[int]:
        if isinstance(entry, bool) or not isinstance(entry, str | int | np.integer):
            raise TypeError(
                "Invalid value for argument `groups`. Expected lists of variable names, layer "
                f"names or int indices. Received an entry {entry!r} of type {type(entry).__name__}"
            )
        if not isinstance(entry, str):
            if not 0 <= entry < len(variables):
                raise ValueError(
                    "Invalid value for argument `groups`. Expected indices in "
                    f"[0, {len(variables)}). Received: index {entry}"
                )
            return [int(entry)]
        if entry in by_var_name:
            if len(by_var_name[entry]) > 1:
                raise ValueError(
                    "Invalid value for argument `groups`. The variable name "
                    f"{entry!r} is ambiguous (several variables have it); use their indices."
                )
            return by_var_name[entry]
        if entry in by_layer:
            if len(by_layer[entry]) > 1:
                raise ValueError(
                    "Invalid value for argument `groups`. The layer name "
                    f"{entry!r} is ambiguous (several nested layers have it); use its path."
                )
            return by_layer[entry][0]
        raise ValueError(
            "Invalid value for argument `groups`. Expected names of trainable variables or "
            f"layers of the model. Received: unknown name {entry!r}. Trainable variables: "
            f"{[v.name for v in variables]}"
        )

    if isinstance(groups, str | bytes) or not isinstance(groups, Sequence) or not groups:
        raise ValueError(
            "Invalid value for argument `groups`. Expected a non-empty list of groups. "
            f"Received: groups={groups!r}"
        )
    owner: dict[int, int] = {}
    result = []
    for g, spec in enumerate(groups):
        if isinstance(spec, str | int) or not isinstance(spec, Sequence) or not spec:
            raise ValueError(
                "Invalid value for argument `groups`. Expected each group to be a non-empty "
                f"list of names or indices. Received: group {g} = {spec!r}"
            )
        indices = []
        for entry in spec:
            for i in resolve(entry):
                if i in owner:
                    raise ValueError(
                        "Invalid value for argument `groups`. Expected every trainable variable "
                        f"in exactly one group. Received: {variables[i].name} in group "
                        f"{owner[i]} and group {g} (entry {entry!r})"
                    )
                owner[i] = g
                indices.append(i)
        if not indices:
            raise ValueError(
                "Invalid value for argument `groups`. Expected each group to hold a trainable "
                f"variable. Received: group {g} = {spec!r}, which names none"
            )
        result.append(LayerGroup("+".join(str(e) for e in spec), tuple(sorted(indices))))
    missing = [variables[i].name for i in range(len(variables)) if i not in owner]
    if missing:
        raise ValueError(
            "Invalid value for argument `groups`. Expected every trainable variable in "
            f"exactly one group. Received groups that miss {missing}"
        )
    return result


def check_groups(
    groups: Sequence[LayerGroup | Sequence[int]], num_variables: int
) -> list[LayerGroup]:
    """Checks that `groups` split ``range(num_variables)`` and returns them as `LayerGroup`s.

    Args:
      groups: `LayerGroup`s (as `layer_groups` returns) or lists of indices.
      num_variables: The number of trainable variables of the model.

    Returns:
      The groups as `LayerGroup`s, in the given order.

    Raises:
      ValueError: If `groups` is empty or an index is out of range, repeated
        or missing.
    """
    if isinstance(groups, str | bytes) or not isinstance(groups, Sequence) or not groups:
        raise ValueError(
            "Invalid value for argument `groups`. Expected a non-empty list of LayerGroup "
            f"(see layer_groups). Received: groups={groups!r}"
        )
    out = []
    for g, group in enumerate(groups):
        if not isinstance(group, LayerGroup):
            if (
                isinstance(group, str)
                or not isinstance(group, Sequence)
                or any(isinstance(i, bool) or not isinstance(i, int | np.integer) for i in group)
            ):
                raise ValueError(
                    "Invalid value for argument `groups`. Expected LayerGroup objects or lists "
                    f"of int indices (see layer_groups). Received: group {g} = {group!r}"
                )
            group = LayerGroup(f"group_{g}", tuple(int(i) for i in group))
        out.append(group)
    seen: dict[int, int] = {}
    for g, group in enumerate(out):
        if not group.indices:
            raise ValueError(f"Invalid value for argument `groups`. Group {g} is empty.")
        for i in group.indices:
            if not 0 <= i < num_variables:
                raise ValueError(
                    "Invalid value for argument `groups`. Expected indices in "
                    f"[0, {num_variables}) (the model's trainable variables). Received: index "
                    f"{i} in group {g} ({group.name!r})"
                )
            if i in seen:
                raise ValueError(
                    "Invalid value for argument `groups`. Expected every trainable variable in "
                    f"exactly one group. Received: index {i} in groups {seen[i]} and {g}"
                )
            seen[i] = g
    missing = sorted(set(range(num_variables)) - set(seen))
    if missing:
        raise ValueError(
            "Invalid value for argument `groups`. Expected every trainable variable in exactly "
            f"one group. Received groups that miss the variables at indices {missing}"
        )
    return out
