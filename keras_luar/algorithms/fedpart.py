"""FedPart: federated training that updates one group of layers per round.

FedPart (Wang et al., NeurIPS 2024) argues that averaging full models makes
the layers of the global model mismatched with each other, and trains only a
part of the network in most rounds while the rest stays frozen as an anchor.
The pieces here are:

* `layer_groups`: the model's trainable variables split into groups in depth
  order, derived from the Keras layers (never from variable names). A layer
  with a trainable variable of rank >= 2 (convolution, dense, embedding, a
  whole `MultiHeadAttention`) starts a group; a layer with only rank <= 1
  trainable variables (BatchNorm, LayerNorm) joins the group of the layer
  that feeds it. A 1×1 projection convolution with its BatchNorm is its own
  group.
* `FedPartSchedule`: which group trains in which round. After
  ``warmup_rounds`` full-network rounds, each cycle trains the groups from
  shallow to deep for ``rounds_per_group`` consecutive rounds each, followed
  by ``full_rounds_between_cycles`` full-network rounds; cycles repeat
  forever.
* `PartialUpdateFactory`: a TFF aggregation factory that aggregates only the
  variables trained this round and reports what was uploaded.
* `build_fedpart`: the `tff.learning.templates.LearningProcess`.

Worked example: 3 groups with the default schedule (5 warm-up rounds, 2 rounds
per group, 5 full rounds between cycles; a cycle lasts 3·2 + 5 = 11 rounds):

    round   0-4   5-6  7-8  9-10  11-15  16-17  18-19  20-21  22-26  27-28 ...
    trains  full  g0   g1   g2    full   g0     g1     g2     full   g0    ...

In a group round, clients train only that group's variables (the others get a
zero gradient and keep the broadcast values), upload only that group, and the
server averages it over the sampled clients weighted by the sizes of their
data sets (Fling's ``sample_num``). Each client starts from a fresh client
optimizer every round, as in the official code. The other variables of the
global model stay bit-for-bit unchanged with the default server optimizer
(SGD with learning rate 1); a server optimizer with momentum or Adam keeps
moving them by its own state.

Non-trainable variables (BatchNorm moving statistics). The official code
never aggregates them (``include_non_param=False``): each client keeps its
own, and the model of ``clients[0]`` is evaluated. ``bn_statistics="average"``
(the default here) averages them over the round's clients every round, as
FedAvg and FedLUAR do, so FedPart is compared with them on equal terms.
``bn_statistics="local"`` is the official rule: every client keeps its
statistics in its client state and trains on from them; the global model
carries the weighted mean of the round's clients' statistics, so that it is
evaluated with statistics from training (see
`keras_luar.algorithms.local_statistics`).

Deviations from the official code (FLAIR-Community/Fling,
``fling/pipeline/partial_model_pipeline.py``), each a fix:

* the schedule is derived from the model and repeats without end; the
  official schedule is written out by hand per architecture and fails after
  its last listed cycle;
* only the clients sampled in a round are averaged; the official aggregation
  averages over all clients, sampled or not.

The official groups of a transformer put each encoder's two LayerNorms with
its feed-forward block and both feed-forward Dense layers in one group; the
rule above gives the post-attention LayerNorm to the attention group and each
Dense its own group. Pass explicit ``groups`` to `layer_groups` for the
official layout.

References:
  Wang, Liu, Zhu, Li, Wu, Dai. "Why Go Full? Elevating Federated Learning
  Through Partial Network Updates", NeurIPS 2024.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import _runtime
from keras_luar._validation import (
    check_aggregation_types,
    check_int,
    check_weighted_factory,
)
from keras_luar.algorithms.client_work import (
    BnStatistics,
    ClientWeighting,
    build_learning_process,
)
from keras_luar.algorithms.stateful import communication_measurements


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
    if not isinstance(model, tf.keras.Model):
        raise TypeError(
            "Invalid value for argument `model`. Expected a tf.keras.Model. "
            f"Received: model={type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            "Invalid value for argument `model`. Expected a built model (give it an Input "
            f"layer or call it once on data). Received: an unbuilt {type(model).__name__}"
        )
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
        network_nodes = getattr(model, "_network_nodes", None)
        if isinstance(model, tf.keras.Sequential) or not getattr(model, "_is_graph_network", False):
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
            inputs = []
            for node_index, node in enumerate(layer._inbound_nodes):
                if f"{layer.name}_ib-{node_index}" not in network_nodes:
                    continue
                for inbound, _, _, _ in node.iterate_inbound():
                    inputs.append(output_group.get(id(inbound), entry))
            known = [g for g in inputs if g is not None]
            feeding = max(known) if known else None
            output_group[id(layer)] = self.visit(layer, feeding, prefix)
        outputs = [output_group.get(id(layer)) for layer in model._output_layers]
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


class FedPartSchedule:
    """Which layer group FedPart trains in each round (None: the full network).

    Round r (counted from 0) trains the full network if r < `warmup_rounds`.
    Otherwise, with k = (r − warmup_rounds) mod (G·`rounds_per_group` +
    `full_rounds_between_cycles`), it trains group k // `rounds_per_group` if
    k < G·`rounds_per_group`, and the full network if not. The pattern repeats
    without end.

    Args:
      num_groups: G >= 1, the number of layer groups.
      warmup_rounds: Full-network rounds before the first cycle (>= 0).
      rounds_per_group: Consecutive rounds each group trains in a cycle (>= 1).
      full_rounds_between_cycles: Full-network rounds after each cycle (>= 0).

    Raises:
      TypeError: If an argument is not an int.
      ValueError: If an argument is below its minimum.

    Examples:
      >>> schedule = FedPartSchedule(3)
      >>> [schedule.group_at(r) for r in (0, 4, 5, 6, 7, 10, 11, 15, 16)]
      [None, None, 0, 0, 1, 2, None, None, 0]

    References:
      Wang et al., "Why Go Full? Elevating Federated Learning Through Partial
      Network Updates", NeurIPS 2024 (Section 4, "FedPart").
    """

    def __init__(
        self,
        num_groups: int,
        *,
        warmup_rounds: int = 5,
        rounds_per_group: int = 2,
        full_rounds_between_cycles: int = 5,
    ):
        self.num_groups = check_int("num_groups", num_groups, 1)
        self.warmup_rounds = check_int("warmup_rounds", warmup_rounds, 0)
        self.rounds_per_group = check_int("rounds_per_group", rounds_per_group, 1)
        self.full_rounds_between_cycles = check_int(
            "full_rounds_between_cycles", full_rounds_between_cycles, 0
        )
        partial = [g for g in range(self.num_groups) for _ in range(self.rounds_per_group)]
        # One period of the repeating pattern after warm-up; -1 marks a full round.
        self._period = np.array(partial + [-1] * self.full_rounds_between_cycles, np.int32)

    @property
    def cycle_length(self) -> int:
        """Rounds from the start of one cycle to the start of the next."""
        return len(self._period)

    def group_at(self, round_num: int) -> int | None:
        """The group trained in round `round_num` (0-based), or None for the full network.

        Raises:
          TypeError: If `round_num` is not an int.
          ValueError: If `round_num` < 0.
        """
        r = check_int("round_num", round_num, 0)
        if r < self.warmup_rounds:
            return None
        g = int(self._period[(r - self.warmup_rounds) % len(self._period)])
        return None if g < 0 else g

    def group_index(self, round_num: tf.Tensor) -> tf.Tensor:
        """`group_at` in TensorFlow: an int32 scalar, -1 for the full network.

        Args:
          round_num: An integer scalar tensor (e.g. a TFF state's round counter).
        """
        r = tf.cast(round_num, tf.int32)
        period = tf.constant(self._period)
        k = tf.math.floormod(r - self.warmup_rounds, len(self._period))
        return tf.where(r < self.warmup_rounds, tf.constant(-1, tf.int32), tf.gather(period, k))

    def trainable_mask_fn(
        self, groups: Sequence[LayerGroup | Sequence[int]], num_variables: int
    ) -> Callable[[tf.Tensor], tf.Tensor]:
        """A function of the round number giving the trained variables as a bool vector.

        Args:
          groups: The G layer groups (see `layer_groups`), in training order.
          num_variables: The model's number of trainable variables.

        Returns:
          ``mask_fn(round_num) -> bool[num_variables]``, built from a constant
          table and `tf.gather`, so it runs inside TFF's computations.

        Raises:
          ValueError: If `groups` does not have G groups that split the variables.
        """
        groups = check_groups(groups, check_int("num_variables", num_variables, 1))
        if len(groups) != self.num_groups:
            raise ValueError(
                "Invalid value for argument `groups`. Expected as many groups as the "
                f"schedule's num_groups={self.num_groups}. Received: {len(groups)} groups"
            )
        rows = np.zeros([self.num_groups + 1, num_variables], bool)
        rows[0] = True  # row 0: the full network; row g + 1: group g
        for g, group in enumerate(groups):
            rows[g + 1, list(group.indices)] = True

        def mask_fn(round_num: tf.Tensor) -> tf.Tensor:
            return tf.gather(tf.constant(rows), self.group_index(round_num) + 1)

        return mask_fn


class PartialUpdateState(NamedTuple):
    """Server state of `PartialUpdateFactory`."""

    round_num: Any  # int32 []: rounds aggregated so far; selects this round's variables
    inner: Any  # state of the inner aggregation process


class PartialUpdateFactory(tff.aggregators.WeightedAggregationFactory):
    """Aggregates only the variables trained this round (FedPart's aggregation).

    One round (t counts from 0, kept in the state):

    1. Server: the mask ``trainable_schedule(t)`` is broadcast.
    2. Clients: variables outside the mask are zero-filled and count as not
       uploaded (TFF types are static: the simulation carries zeros where a
       deployment sends nothing; with FedPart's frozen variables the update is
       exactly zero anyway). A client with a non-finite value or weight 0 is
       zeroed and weighted 0.
    3. Inner aggregation (default: `tff.aggregators.MeanFactory`, which
       weights clients by the weights it is given; the number of examples in
       `build_fedpart`).
    4. Server: if every client had weight 0, the result is zero (no update)
       instead of the inner mean's 0/0; variables outside the mask are zero.

    Measurements: ``communication`` (``upload_params`` = Σ numel of the
    trained variables × participating clients, ``upload_bytes`` the same at
    the variables' dtype sizes or at the inner factory's ``encoded_bytes``,
    ``aggregated`` = the fraction of participating clients aggregated for a
    trained variable, 1.0 in an ordinary round, and 0.0 for the others);
    ``fedpart=OrderedDict(group=<int32, -1 for full>)`` when `group_schedule`
    is given; and ``inner``.

    Args:
      trainable_schedule: ``f(round_num: int32 tensor) -> bool tensor`` with one
        entry per leaf of the value type (e.g.
        `FedPartSchedule.trainable_mask_fn`). It must use the same round
        counter as the client work (both count from 0, one per round).
      group_schedule: Optional ``f(round_num) -> int32 scalar`` reported as
        ``fedpart.group`` (e.g. `FedPartSchedule.group_index`).
      inner_factory: A `tff.aggregators.WeightedAggregationFactory` for the
        trained variables; defaults to `tff.aggregators.MeanFactory()`.

    Raises:
      TypeError: If a schedule is not callable or `inner_factory` is not a
        weighted factory.

    Examples:
      >>> import numpy as np, tensorflow as tf, tensorflow_federated as tff
      >>> schedule = FedPartSchedule(2, warmup_rounds=1, rounds_per_group=1,
      ...                            full_rounds_between_cycles=0)
      >>> factory = PartialUpdateFactory(
      ...     schedule.trainable_mask_fn([[0], [1]], 2), group_schedule=schedule.group_index)
      >>> process = factory.create(tff.types.to_type([(np.float32, (2, 2)), (np.float32, (2,))]),
      ...                          tff.TensorType(np.float32))

    References:
      Wang et al., "Why Go Full? Elevating Federated Learning Through Partial
      Network Updates", NeurIPS 2024.
    """

    def __init__(
        self,
        trainable_schedule: Callable[[tf.Tensor], tf.Tensor],
        *,
        group_schedule: Callable[[tf.Tensor], tf.Tensor] | None = None,
        inner_factory: tff.aggregators.WeightedAggregationFactory | None = None,
    ):
        if not callable(trainable_schedule):
            raise TypeError(
                "Invalid value for argument `trainable_schedule`. Expected a callable of the "
                f"round number. Received: trainable_schedule={trainable_schedule!r}"
            )
        if group_schedule is not None and not callable(group_schedule):
            raise TypeError(
                "Invalid value for argument `group_schedule`. Expected a callable of the round "
                f"number or None. Received: group_schedule={group_schedule!r}"
            )
        inner_factory = check_weighted_factory("inner_factory", inner_factory)
        self._trainable_schedule = trainable_schedule
        self._group_schedule = group_schedule
        self._inner_factory = inner_factory

    def create(
        self, value_type: tff.types.Type, weight_type: tff.types.Type
    ) -> tff.templates.AggregationProcess:
        """Builds the aggregation process for `value_type` (see the class docstring).

        Args:
          value_type: A structure of float tensors with fully defined shapes.
          weight_type: A float `tff.TensorType`.

        Returns:
          A `tff.templates.AggregationProcess` whose state is a `PartialUpdateState`.

        Raises:
          TypeError: If the types are not as above.
          ValueError: If the schedule's mask does not have one entry per tensor.
        """
        value_type, weight_type = check_aggregation_types(
            "PartialUpdateFactory", value_type, weight_type
        )
        _runtime.install()  # TFF computations follow: guard its worker processes
        specs = tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type))
        if not all(s.shape.is_fully_defined() for s in specs):
            raise TypeError(
                "PartialUpdateFactory.create: expected tensors with fully defined shapes. "
                f"Received: value_type={value_type}"
            )
        num_variables = len(specs)
        with tf.Graph().as_default():
            probe = tf.convert_to_tensor(self._trainable_schedule(tf.constant(0, tf.int32)))
        if probe.shape.as_list() != [num_variables]:
            raise ValueError(
                "PartialUpdateFactory.create: `trainable_schedule` must return a bool vector "
                f"with one entry per tensor of the value type ({num_variables}). Received a "
                f"tensor of shape {probe.shape}"
            )
        encoded_bytes = getattr(self._inner_factory, "encoded_bytes", None)

        def nbytes(spec: tf.TensorSpec) -> int:
            # An encoding inner factory (e.g. QuantizationFactory) says what one
            # tensor costs on the wire; otherwise it travels at its own dtype.
            if callable(encoded_bytes):
                return int(encoded_bytes(spec.shape, spec.dtype))
            return spec.shape.num_elements() * spec.dtype.size

        sizes = np.array([s.shape.num_elements() for s in specs], np.int64)
        byte_sizes = np.array([nbytes(s) for s in specs], np.int64)
        inner_process = self._inner_factory.create(value_type, weight_type)
        inner_state_type = inner_process.initialize.type_signature.result.member
        trainable_schedule = self._trainable_schedule
        group_schedule = self._group_schedule

        @tff.tensorflow.computation(inner_state_type)
        def init_state(inner):
            return PartialUpdateState(round_num=tf.constant(0, tf.int32), inner=inner)

        @tff.federated_computation()
        def init_fn():
            return tff.federated_map(init_state, inner_process.initialize())

        state_type = init_state.type_signature.result

        @tff.tensorflow.computation(state_type)
        def round_mask(state):
            mask = tf.cast(trainable_schedule(state.round_num), tf.bool)
            return tf.reshape(mask, [num_variables])

        @tff.tensorflow.computation(state_type)
        def get_inner(state):
            return state.inner

        mask_type = round_mask.type_signature.result

        @tff.tensorflow.computation(value_type, weight_type, mask_type)
        def prepare_upload(value, weight, mask):
            flat = tf.nest.flatten(value)
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in flat])
            valid = tf.logical_and(finite, weight > 0)
            keep = tf.unstack(tf.logical_and(mask, valid), num=num_variables)
            # tf.where, not a product: 0 * NaN would still be NaN.
            flat = [tf.where(k, t, tf.zeros_like(t)) for k, t in zip(keep, flat, strict=True)]
            return (
                tf.nest.pack_sequence_as(value, flat),
                tf.where(valid, weight, tf.zeros_like(weight)),
                tf.cast(valid, tf.int32),
                tf.constant(1, tf.int32),
            )

        inner_result_type = inner_process.next.type_signature.result.result.member

        @tff.tensorflow.computation(
            state_type, inner_state_type, inner_result_type, mask_type, np.int32, np.int32
        )
        def server_update(state, inner_state, mean_value, mask, num_valid, num_clients):
            # With every weight 0, TFF's mean is 0/0 = NaN: the round then applies no update.
            any_valid = num_valid > 0
            keep = tf.unstack(tf.logical_and(mask, any_valid), num=num_variables)
            flat = [
                tf.where(k, t, tf.zeros_like(t))
                for k, t in zip(keep, tf.nest.flatten(mean_value), strict=True)
            ]
            mask64 = tf.cast(mask, tf.int64)
            clients64 = tf.cast(num_clients, tf.int64)
            fraction = tf.math.divide_no_nan(
                tf.cast(num_valid, tf.float32), tf.cast(num_clients, tf.float32)
            )
            measurements = collections.OrderedDict(
                communication=communication_measurements(
                    upload_params=tf.reduce_sum(mask64 * sizes) * clients64,
                    upload_bytes=tf.reduce_sum(mask64 * byte_sizes) * clients64,
                    aggregated=tf.cast(mask, tf.float32) * fraction,
                )
            )
            if group_schedule is not None:
                group = tf.cast(tf.reshape(group_schedule(state.round_num), []), tf.int32)
                measurements["fedpart"] = collections.OrderedDict(group=group)
            new_state = PartialUpdateState(round_num=state.round_num + 1, inner=inner_state)
            return new_state, tf.nest.pack_sequence_as(mean_value, flat), measurements

        @tff.federated_computation(
            tff.FederatedType(state_type, tff.SERVER),
            tff.FederatedType(value_type, tff.CLIENTS),
            tff.FederatedType(weight_type, tff.CLIENTS),
        )
        def next_fn(state, value, weight):
            # Client computation: only this round's variables are sent.
            mask = tff.federated_map(round_mask, state)
            upload = tff.federated_map(
                prepare_upload, (value, weight, tff.federated_broadcast(mask))
            )
            # Inner aggregation of what was sent.
            inner_output = inner_process.next(
                tff.federated_map(get_inner, state), upload[0], upload[1]
            )
            num_valid = tff.federated_sum(upload[2])
            num_clients = tff.federated_sum(upload[3])
            # Server computation: the all-weights-zero guard, the round counter, accounting.
            new_state, result, measurements = tff.federated_map(
                server_update,
                (state, inner_output.state, inner_output.result, mask, num_valid, num_clients),
            )
            # Output preparation: `communication` (and `fedpart`) at the top, as the
            # trainer looks them up by name.
            outputs = collections.OrderedDict(communication=measurements["communication"])
            if group_schedule is not None:
                outputs["fedpart"] = measurements["fedpart"]
            outputs["inner"] = inner_output.measurements
            measurements = tff.federated_zip(outputs)
            return tff.templates.MeasuredProcessOutput(
                state=new_state, result=result, measurements=measurements
            )

        return tff.templates.AggregationProcess(init_fn, next_fn)


def _num_trainable(model_fn: Callable[[], tff.learning.models.VariableModel]) -> int:
    with tf.Graph().as_default():
        return len(model_fn().trainable_variables)


def build_fedpart(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    *,
    groups: Sequence[LayerGroup | Sequence[int]],
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer | None = None,
    local_steps: int,
    warmup_rounds: int = 5,
    rounds_per_group: int = 2,
    full_rounds_between_cycles: int = 5,
    client_weighting: ClientWeighting = "example",
    seed: int = 0,
    bn_statistics: BnStatistics = "average",
) -> Any:
    """Builds FedPart as a TFF learning process.

    Each round follows `FedPartSchedule`: the sampled clients train the
    round's group (or the full network) for `local_steps` steps from the
    global weights with a fresh client optimizer, send only that group, and
    the server averages it weighted by the clients' data set sizes
    (`PartialUpdateFactory`) before the server optimizer applies it.
    BatchNorm moving statistics are averaged over the round's clients by
    default; ``bn_statistics="local"`` keeps them per client (see the module
    docstring).

    Args:
      model_fn: A no-argument callable returning a new
        `tff.learning.models.VariableModel` (e.g. from
        `tff.learning.models.from_keras_model`).
      groups: The layer groups in training order, as `layer_groups` returns
        for the Keras model behind `model_fn` (or lists of indices into its
        trainable variables).
      client_optimizer: The client `tff.learning.optimizers.Optimizer`.
      server_optimizer: The server optimizer; None is SGD with learning rate 1
        (x_{t+1} = x_t + averaged client change), as in the paper.
      local_steps: τ >= 1, the local steps per round; the driver gives each
        client τ batches, so it is checked here and documents the set-up.
      warmup_rounds: Full-network rounds before the first cycle (paper: 5).
      rounds_per_group: Consecutive rounds per group in a cycle (paper: 2).
      full_rounds_between_cycles: Full-network rounds after each cycle
        (paper: 5).
      client_weighting: ``"example"`` (FedPart's data-size weighted average;
        each client's data is then a
        `keras_luar.algorithms.weighting.SizedClientData`), ``"uniform"`` or
        ``"round_examples"``.
      seed: Accepted for the common builder interface; FedPart draws nothing.
      bn_statistics: ``"average"`` (default) or ``"local"`` (the official
        per-client statistics).

    Returns:
      A `tff.learning.templates.LearningProcess` (with ``"local"`` and a model
      with non-trainable variables, a `StatefulClientProcess`). Its metrics
      hold ``aggregator.communication`` and ``aggregator.fedpart.group`` (-1
      for a full-network round).

    Raises:
      TypeError: If an integer argument is not an int.
      ValueError: If an argument is out of range or `groups` does not split the
        model's trainable variables.

    Examples:
      >>> groups = layer_groups(keras_model)  # doctest: +SKIP
      >>> process = build_fedpart(  # doctest: +SKIP
      ...     model_fn, groups=groups, local_steps=20,
      ...     client_optimizer=tff.learning.optimizers.build_sgdm(0.05))

    References:
      Wang et al., "Why Go Full? Elevating Federated Learning Through Partial
      Network Updates", NeurIPS 2024.
    """
    check_int("local_steps", local_steps, 1)
    check_int("seed", seed, -(2**63))
    if isinstance(groups, str | bytes) or not isinstance(groups, Sequence) or not groups:
        raise ValueError(
            "Invalid value for argument `groups`. Expected a non-empty list of LayerGroup "
            f"(see layer_groups). Received: groups={groups!r}"
        )
    schedule = FedPartSchedule(
        len(groups),
        warmup_rounds=warmup_rounds,
        rounds_per_group=rounds_per_group,
        full_rounds_between_cycles=full_rounds_between_cycles,
    )
    mask_fn = schedule.trainable_mask_fn(groups, _num_trainable(model_fn))
    return build_learning_process(
        model_fn,
        client_optimizer=client_optimizer,
        server_optimizer=server_optimizer,
        model_aggregator=PartialUpdateFactory(mask_fn, group_schedule=schedule.group_index),
        client_weighting=client_weighting,
        trainable_schedule=mask_fn,
        bn_statistics=bn_statistics,
    )
