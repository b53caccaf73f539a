"""FedPart: federated training that updates one group of layers per round.

FedPart (Wang et al., NeurIPS 2024) argues that averaging full models makes
the layers of the global model mismatched with each other, and trains only a
part of the network in most rounds while the rest stays frozen as an anchor.
The pieces here are:

* `keras_luar.layer_groups.layer_groups`: the model's trainable variables
  split into groups in depth order, derived from the Keras layers (never from
  variable names).
* `FedPartSchedule`: which group trains in which round. After
  ``warmup_rounds`` full-network rounds, each cycle trains the groups from
  shallow to deep for ``rounds_per_group`` consecutive rounds each, followed
  by ``full_rounds_between_cycles`` full-network rounds; cycles repeat
  forever.
* `keras_luar.aggregators.partial.PartialUpdateFactory`: a TFF aggregation
  factory that aggregates only the variables trained this round and reports
  what was uploaded.
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

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar._types import BnStatistics, ClientWeighting
from keras_luar._validation import check_int
from keras_luar.aggregators.partial import PartialUpdateFactory, PartialUpdateState
from keras_luar.algorithms.client_work import build_learning_process
from keras_luar.algorithms.registry import builtin
from keras_luar.algorithms.spec import BuildContext, Option
from keras_luar.layer_groups import GroupSpec, LayerGroup, check_groups, layer_groups

__all__ = [
    "FedPartSchedule",
    "GroupSpec",
    "LayerGroup",
    "PartialUpdateFactory",
    "PartialUpdateState",
    "build_fedpart",
    "layer_groups",
]


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


def _check_group_entries(name: str, value: Any) -> Any:
    if value is not None and not isinstance(value, list | tuple):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected None or a list of groups, each a "
            f"list of variable names or indices. Received: {name}={value!r}"
        )
    return value


def _build(context: BuildContext) -> Any:
    options = context.options
    return build_fedpart(
        context.model_fn,
        groups=layer_groups(context.keras_model, groups=options["groups"]),
        client_optimizer=context.client_optimizer,
        server_optimizer=context.server_optimizer,
        local_steps=context.local_steps,
        warmup_rounds=options["warmup_rounds"],
        rounds_per_group=options["rounds_per_group"],
        full_rounds_between_cycles=options["full_rounds_between_cycles"],
        client_weighting=context.client_weighting,
        seed=context.seed,
        bn_statistics=context.bn_statistics,
    )


def _count(minimum: int) -> Callable[[str, Any], int]:
    return lambda name, value: check_int(name, value, minimum)


OPTIONS = {
    "warmup_rounds": Option(5, _count(0), "full-network rounds before the first cycle"),
    "rounds_per_group": Option(2, _count(1), "consecutive rounds per group"),
    "full_rounds_between_cycles": Option(5, _count(0), "full rounds after each cycle"),
    "groups": Option(None, _check_group_entries, "explicit layer groups (None: derived)"),
}
SPEC = builtin("fedpart", _build, options=OPTIONS)
