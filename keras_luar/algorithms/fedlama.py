"""FedLAMA: layer-wise adaptive aggregation intervals, as a process with per-client state.

FedLAMA (Lee et al., AAAI 2023) averages the model layer by layer, each on its
own schedule. Every trainable variable v has an aggregation interval
I_v ∈ {1, φ} rounds. At the end of round t (counted from 0) the variable is
averaged across the participating clients iff (t + 1) mod I_v == 0; otherwise
each client keeps its own copy and continues training it in round t + 1.
Variables whose client copies barely differ are averaged less often, which
saves uplink traffic where it costs the least accuracy.

**Sampling period and client-kept copies.** A copy can only be continued by
the client that holds it, so clients are re-sampled only every φ rounds
(`StatefulClientProcess.client_period` = φ; the driver re-samples when
t mod φ == 0). Intervals only change at the end of a period, and every
I_v divides φ, so at the end of each period every variable is averaged and a
new period starts from one global model. Within a round a client starts each
variable from

* the global value, if the variable was averaged at the end of the previous
  round, if the client did not take part in the previous round (a newcomer or
  a client whose state is stale), or at the start of a period;
* its own copy (its client state), otherwise.

The server broadcasts the "averaged last round" mask for that decision.

**Averaging and discrepancy.** For an averaged variable the server computes
x̄_v, the mean of the client values (unweighted as in the official code, or
example-weighted), then broadcasts x̄ once more in the same round so that each
client reports its squared distance ||x̄_v − x^i_v||². The discrepancy is
d_v = mean_i ||x̄_v − x^i_v||² / (I_v · τ · numel(v)), with the same client
weights as the average. Computing it from distances to the broadcast mean
avoids the cancellation of the ||x||² − ||x̄||² form. Each client's copy of an
averaged variable becomes x̄_v, as in the official code.

**Interval adjustment.** After ``fedavg_rounds`` FedAvg rounds, at the end of
every period the kernels with the smallest discrepancies get interval φ
(`keras_luar.algorithms.fedlama_intervals`, with the official code's details).

**What is sent.** A client uploads the variables averaged this round, at
their dtype; the one scalar per variable of the distance pass is not counted.
``communication.aggregated`` is 1 for variables averaged this round, else 0
(times the fraction of clients whose training stayed finite).

**Global weights mid-period.** `get_model_weights` returns each variable's
value at its last averaging (the clients' own copies have moved on since).

**Non-trainable variables** (BatchNorm moving statistics). The official code
never averages them: every process slot keeps one model copy whose statistics
go on updating as the slot trains client after client, and the model of slot 0
is evaluated. There are no slots here (a client is simulated where it is
sampled), so:

* ``bn_statistics="average"`` (the default): the statistics are treated like
  a variable of interval 1. Clients start every round from the global
  statistics, and the weighted mean of their statistics after training
  becomes the global model's.
* ``bn_statistics="local"``: every client keeps its own statistics (the
  counterpart of a slot's copy, per client instead of per slot) and trains on
  from them (from the global ones the first time); the global model carries
  the weighted mean of the round's clients' statistics after training.

The statistics are not counted as uploaded (nor are they officially).

References:
  Lee, Zhang, Avestimehr. "Layer-wise Adaptive Model Aggregation for Scalable
  Federated Learning", AAAI 2023 (arXiv:2110.10302).
  Official code: https://github.com/swblaster/FedLAMA
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Literal

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import layers
from keras_luar._federated import server_and_clients
from keras_luar._types import ClientWeighting
from keras_luar._validation import check_bn_statistics, check_int, check_weighting
from keras_luar.aggregators.measurements import communication_measurements
from keras_luar.algorithms.fedlama_intervals import _is_plain_step, adjusted_intervals
from keras_luar.algorithms.local_training import (
    all_finite,
    build_local_training,
    model_types,
    optimizer_hparams,
)
from keras_luar.algorithms.registry import builtin
from keras_luar.algorithms.spec import BuildContext, Option
from keras_luar.algorithms.stateful import (
    StatefulClientProcess,
    StatefulOutput,
)
from keras_luar.algorithms.weighting import (
    client_data_type,
    client_weight,
    unpack_client_data,
)

ModelWeights = tff.learning.models.ModelWeights


def build_fedlama(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer | None = None,
    local_steps: int,
    aggregation_interval: int = 2,
    fedavg_rounds: int = 8,
    client_weighting: ClientWeighting = "uniform",
    bn_statistics: Literal["average", "local"] = "average",
    seed: int = 0,
) -> StatefulClientProcess:
    """Builds FedLAMA as a `StatefulClientProcess` (see the module docstring).

    Args:
      model_fn: A no-argument callable returning a new
        `tff.learning.models.VariableModel`.
      client_optimizer: A `tff.learning.optimizers.Optimizer` for local
        training; its state is fresh every round.
      server_optimizer: Must be None: FedLAMA replaces each averaged variable
        by the clients' mean, there is no server step to optimize. SGD with
        learning rate 1 and no momentum is the same step and is accepted too
        (`keras_luar.FederatedTrainer` passes it when given no server optimizer).
      local_steps: τ, the number of batches each client trains on per round
        (the driver provides exactly τ batches). Used to normalize the
        discrepancy.
      aggregation_interval: φ, the longer interval and the sampling period.
        φ = 1 averages everything every round and re-samples every round,
        which is FedAvg.
      fedavg_rounds: Rounds of plain FedAvg before the first interval
        adjustment (the official code: 8, rounds 0–7).
      client_weighting: ``"uniform"`` (the official code's plain mean),
        ``"example"`` (weights by the client's data set size; the client data
        is then a `keras_luar.algorithms.weighting.SizedClientData`) or
        ``"round_examples"`` (the examples trained this round). A client whose
        trained model is not finite keeps its starting weights and gets
        weight 0.
      bn_statistics: ``"average"`` or ``"local"`` (see the module docstring).
      seed: Accepted for a uniform builder interface; FedLAMA draws nothing.

    Returns:
      A `StatefulClientProcess` with ``client_period`` = φ. Its server state is
      ``OrderedDict(global_model_weights, client_hparams, round_num,
      intervals, discrepancy, sync_counts)`` (intervals: int32 per trainable
      variable for the coming round; discrepancy: float32 d_v of each
      variable's last averaging; sync_counts: int32 averagings so far). A
      client state is ``OrderedDict(model=<trainable tensors>,
      round_num=<int32 round it last trained, -1 if never>)``, plus
      ``statistics`` (its own non-trainable variables) with
      ``bn_statistics="local"``. The metrics are
      ``OrderedDict(client_work=OrderedDict(train=...), communication=...,
      fedlama=OrderedDict(intervals=<this round's>, discrepancy=<after it>))``.

    Raises:
      TypeError: If an argument has the wrong type (e.g. φ = 1.5).
      ValueError: If φ < 1, ``fedavg_rounds`` < 0, ``local_steps`` < 1, the
        weighting is unknown or a server optimizer other than the plain
        step is given.

    Examples:
      >>> process = build_fedlama(  # doctest: +SKIP
      ...     model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(0.05),
      ...     local_steps=10, aggregation_interval=2)
      >>> state = process.initialize()  # doctest: +SKIP

    References:
      Lee, Zhang, Avestimehr. "Layer-wise Adaptive Model Aggregation for
      Scalable Federated Learning", AAAI 2023. https://github.com/swblaster/FedLAMA
    """
    phi = check_int("aggregation_interval", aggregation_interval, 1)
    warmup = check_int("fedavg_rounds", fedavg_rounds, 0)
    tau = check_int("local_steps", local_steps, 1)
    check_int("seed", seed, 0)
    check_weighting("client_weighting", client_weighting)
    check_bn_statistics(bn_statistics)
    if not _is_plain_step(server_optimizer):
        raise ValueError(
            "Invalid value for argument `server_optimizer`. FedLAMA sets each averaged "
            "variable to the clients' mean and has no server optimizer; expected None (or "
            "SGD with learning rate 1 and no momentum, the same step). "
            f"Received: server_optimizer={server_optimizer!r}"
        )
    if not isinstance(client_optimizer, tff.learning.optimizers.Optimizer):
        raise TypeError(
            "Invalid value for argument `client_optimizer`. Expected a "
            "tff.learning.optimizers.Optimizer. "
            f"Received: client_optimizer of type {type(client_optimizer).__name__}"
        )

    initial_weights, weights_type, batches_type, aggregate_metrics = model_types(model_fn)
    data_type = client_data_type(batches_type, client_weighting)
    layout = layers.describe_weights_type(weights_type)
    n = len(layout.trainable)
    stats_specs = [(v.shape, tf.as_dtype(v.dtype)) for v in layout.non_trainable]
    local_stats = bn_statistics == "local" and bool(stats_specs)
    sizes = np.array([v.size for v in layout.trainable], np.int64)
    nbytes = np.array([v.nbytes for v in layout.trainable], np.int64)
    shapes = [(v.shape, tf.as_dtype(v.dtype)) for v in layout.trainable]
    candidates = layout.candidate_indices
    hparams = optimizer_hparams(client_optimizer)

    @tff.tensorflow.computation()
    def init_state():
        return collections.OrderedDict(
            global_model_weights=ModelWeights.from_model(model_fn()),
            client_hparams=tf.nest.map_structure(tf.constant, hparams),
            round_num=tf.constant(0, tf.int32),
            intervals=tf.ones([n], tf.int32),
            discrepancy=tf.zeros([n], tf.float32),
            sync_counts=tf.zeros([n], tf.int32),
        )

    state_type = init_state.type_signature.result

    @tff.federated_computation()
    def initialize():
        return tff.federated_eval(init_state, tff.SERVER)

    @tff.tensorflow.computation()
    def initial_client_state():
        state = collections.OrderedDict(
            model=[tf.zeros(shape, dtype) for shape, dtype in shapes],
            round_num=tf.constant(-1, tf.int32),
        )
        if local_stats:
            state["statistics"] = [tf.zeros(shape, dtype) for shape, dtype in stats_specs]
        return state

    client_state_type = initial_client_state.type_signature.result

    # Step 1 (server): this round's plan.
    @tff.tensorflow.computation(state_type)
    def round_plan(state):
        t = state["round_num"]
        intervals = state["intervals"]
        return collections.OrderedDict(
            weights=state["global_model_weights"],
            hparams=state["client_hparams"],
            round_num=t,
            synced_last=tf.equal(tf.math.floormod(t, intervals), 0),
            sync=tf.equal(tf.math.floormod(t + 1, intervals), 0),
        )

    plan_type = round_plan.type_signature.result

    # Step 2 (clients): train from the global model or the kept copies; upload
    # the weighted values of the variables averaged this round.
    @tff.tensorflow.computation(plan_type, data_type, client_state_type)
    def client_train(plan, data, client_state):
        batches, data_size = unpack_client_data(data, client_weighting)
        _, train = build_local_training(model_fn, client_optimizer)
        global_trainable = list(plan["weights"].trainable)
        local = list(client_state["model"])
        continues = tf.equal(client_state["round_num"], plan["round_num"] - 1)
        synced_last = tf.unstack(plan["synced_last"], num=n)
        sync = tf.unstack(plan["sync"], num=n)
        start = [
            tf.where(tf.logical_and(continues, tf.logical_not(s)), x_local, x_global)
            for s, x_local, x_global in zip(synced_last, local, global_trainable, strict=True)
        ]
        start_stats = list(plan["weights"].non_trainable)
        if local_stats:  # the client's own statistics once it has trained
            trained_before = client_state["round_num"] >= 0
            start_stats = [
                tf.where(trained_before, own, s)
                for own, s in zip(client_state["statistics"], start_stats, strict=True)
            ]
        initial = ModelWeights(trainable=start, non_trainable=start_stats)
        trained, num_examples, metrics = train(initial, batches, plan["hparams"])
        finite = tf.logical_and(all_finite(trained.trainable), all_finite(trained.non_trainable))
        stats = [
            tf.where(finite, s, s0)
            for s, s0 in zip(trained.non_trainable, start_stats, strict=True)
        ]
        trained = [tf.where(finite, x, x0) for x, x0 in zip(trained.trainable, start, strict=True)]
        weight = client_weight(client_weighting, num_examples, data_size)
        weight = tf.where(finite, weight, 0.0)
        upload = [
            tf.where(s, weight * x, tf.zeros_like(x)) for s, x in zip(sync, trained, strict=True)
        ]
        kept = collections.OrderedDict(model=trained, weight=weight)
        if local_stats:
            kept["statistics"] = stats
        sent = collections.OrderedDict(
            weighted_values=upload,
            weight=weight,
            num_clients=tf.constant(1, tf.int32),
            num_finite=tf.cast(finite, tf.int32),
        )
        if stats:
            sent["weighted_statistics"] = [
                tf.where(finite, weight * s, tf.zeros_like(s)) for s in stats
            ]
        return sent, kept, metrics

    upload_type, kept_type, _ = client_train.type_signature.result

    # Step 3 (server): the mean of each averaged variable; the others keep
    # their last averaged value.
    @tff.tensorflow.computation(plan_type, upload_type)
    def server_mean(plan, sums):
        total = sums["weight"]
        return [
            tf.where(tf.logical_and(s, total > 0), x_sum / tf.maximum(total, 1e-30), x)
            for s, x_sum, x in zip(
                tf.unstack(plan["sync"], num=n),
                sums["weighted_values"],
                plan["weights"].trainable,
                strict=True,
            )
        ]

    mean_type = server_mean.type_signature.result

    # Step 4 (clients): weighted squared distances to the broadcast mean; the
    # averaged variables of the kept copy become the mean.
    @tff.tensorflow.computation(plan_type, mean_type, kept_type)
    def client_distance(plan, mean, kept):
        sync = tf.unstack(plan["sync"], num=n)
        distances = tf.stack(
            [
                tf.where(s, kept["weight"] * tf.reduce_sum(tf.square(m - x)), 0.0)
                for s, m, x in zip(sync, mean, kept["model"], strict=True)
            ]
        )
        model = [tf.where(s, m, x) for s, m, x in zip(sync, mean, kept["model"], strict=True)]
        new_state = collections.OrderedDict(model=model, round_num=plan["round_num"])
        if local_stats:
            new_state["statistics"] = kept["statistics"]
        return distances, new_state

    distance_type = client_distance.type_signature.result[0]

    # Step 5 (server): discrepancies, counts, the interval adjustment at the
    # end of a period, and the round's measurements.
    @tff.tensorflow.computation(state_type, plan_type, mean_type, upload_type, distance_type)
    def server_update(state, plan, mean, sums, distance_sums):
        t = state["round_num"]
        intervals = state["intervals"]
        sync = plan["sync"]
        total = sums["weight"]
        fresh = tf.logical_and(sync, total > 0)
        normalizer = tf.cast(intervals, tf.float32) * float(tau) * tf.constant(sizes, tf.float32)
        d = distance_sums / tf.maximum(total, 1e-30) / normalizer
        discrepancy = tf.where(fresh, d, state["discrepancy"])
        period_end = tf.equal(tf.math.floormod(t + 1, phi), 0)
        adjust = tf.logical_and(period_end, t >= warmup - 1)
        new_intervals = tf.where(
            adjust, adjusted_intervals(discrepancy, sizes, candidates, phi), intervals
        )
        weights = state["global_model_weights"]
        # Every round, the global statistics become the clients' weighted mean
        # after training (both rules; see the module docstring).
        statistics = list(weights.non_trainable)
        if statistics:
            statistics = [
                tf.where(total > 0, s_sum / tf.maximum(total, 1e-30), s)
                for s_sum, s in zip(sums["weighted_statistics"], statistics, strict=True)
            ]
        new_state = collections.OrderedDict(
            global_model_weights=ModelWeights(trainable=list(mean), non_trainable=statistics),
            client_hparams=state["client_hparams"],
            round_num=t + 1,
            intervals=new_intervals,
            discrepancy=discrepancy,
            sync_counts=state["sync_counts"] + tf.cast(sync, tf.int32),
        )
        synced = tf.cast(sync, tf.int64)
        clients = tf.cast(sums["num_clients"], tf.int64)
        finite_fraction = tf.math.divide_no_nan(
            tf.cast(sums["num_finite"], tf.float32), tf.cast(sums["num_clients"], tf.float32)
        )
        communication = communication_measurements(
            upload_params=clients * tf.reduce_sum(synced * tf.constant(sizes)),
            upload_bytes=clients * tf.reduce_sum(synced * tf.constant(nbytes)),
            aggregated=tf.cast(sync, tf.float32) * finite_fraction,
        )
        fedlama = collections.OrderedDict(intervals=intervals, discrepancy=discrepancy)
        return new_state, communication, fedlama

    @tff.federated_computation(*server_and_clients(state_type, data_type, client_state_type))
    def next_fn(state, data, client_states):
        plan = tff.federated_map(round_plan, state)
        upload, kept, model_metrics = tff.federated_map(
            client_train, (tff.federated_broadcast(plan), data, client_states)
        )
        sums = tff.federated_sum(upload)
        mean = tff.federated_map(server_mean, (plan, sums))
        distances, new_client_states = tff.federated_map(
            client_distance,
            (tff.federated_broadcast(plan), tff.federated_broadcast(mean), kept),
        )
        distance_sums = tff.federated_sum(distances)
        new_state, communication, fedlama = tff.federated_map(
            server_update, (state, plan, mean, sums, distance_sums)
        )
        metrics = tff.federated_zip(
            collections.OrderedDict(
                client_work=collections.OrderedDict(train=aggregate_metrics(model_metrics)),
                communication=communication,
                fedlama=fedlama,
            )
        )
        return StatefulOutput(new_state, new_client_states, metrics)

    return StatefulClientProcess(initialize, next_fn, initial_client_state, client_period=phi)


def _build(context: BuildContext) -> StatefulClientProcess:
    return build_fedlama(
        context.model_fn,
        client_optimizer=context.client_optimizer,
        local_steps=context.local_steps,
        aggregation_interval=context.options["aggregation_interval"],
        fedavg_rounds=context.options["fedavg_rounds"],
        client_weighting=context.client_weighting,
        bn_statistics=context.bn_statistics,
        seed=context.seed,
    )


OPTIONS = {
    "aggregation_interval": Option(
        2, lambda n, v: check_int(n, v, 1), "φ, the longer interval and sampling period"
    ),
    "fedavg_rounds": Option(
        8, lambda n, v: check_int(n, v, 0), "FedAvg rounds before intervals adapt"
    ),
}
SPEC = builtin("fedlama", _build, options=OPTIONS)
