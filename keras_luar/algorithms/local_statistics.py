"""FedAvg-style training in which every client keeps its own BatchNorm statistics.

Fling's FedPart (FLAIR-Community/Fling, ``include_non_param=False``) never
aggregates non-trainable buffers: each client's moving statistics stay in the
client, and training continues from them the next time it is sampled. That
needs per-client state, so `build_with_local_statistics` returns a
`keras_luar.algorithms.StatefulClientProcess`:

* a client starts local training from the broadcast trainable weights and
  from *its own* statistics (the global model's if it has never trained);
* it uploads its update as in `build_learning_process` (the aggregator and
  the server optimizer are the same); its statistics after training become
  its new client state (unchanged if training was not finite);
* the global model needs statistics for evaluation and for the user: it
  carries the weighted mean of the round's clients' statistics after
  training. The official code evaluates instead the model of one client
  (``clients[0]``), whose statistics reflect that client's data alone (and
  are its initial ones if it was never sampled); the mean is the closest
  global counterpart that always comes from training.

The statistics are not counted as uploaded: like every method here, the
accounting counts trainable variables only.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar._federated import server_initialize
from keras_luar._validation import check_weighting
from keras_luar.algorithms.client_work import (
    TrainableSchedule,
    check_proximal_strength,
    client_round,
)
from keras_luar.algorithms.local_training import all_finite, model_types
from keras_luar.algorithms.stateful import StatefulClientProcess, StatefulOutput
from keras_luar.algorithms.weighting import client_data_type

ModelWeights = tff.learning.models.ModelWeights


def build_with_local_statistics(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    model_aggregator: tff.aggregators.WeightedAggregationFactory,
    proximal_strength: float = 0.0,
    client_weighting: str = "round_examples",
    trainable_schedule: TrainableSchedule | None = None,
) -> StatefulClientProcess:
    """Builds the process described in the module docstring.

    Args:
      model_fn: A no-argument callable returning a new
        `tff.learning.models.VariableModel` with non-trainable variables.
      client_optimizer: The clients' `tff.learning.optimizers.Optimizer`.
      server_optimizer: The server's `tff.learning.optimizers.Optimizer`.
      model_aggregator: A weighted aggregation factory for the updates (it
        must not need the norm wrapper of `LuarFactory`).
      proximal_strength: FedProx's μ >= 0.
      client_weighting: See `keras_luar.algorithms.weighting`; it also weights
        the mean of the statistics the global model carries.
      trainable_schedule: See `keras_luar.algorithms.build_client_work`.

    Returns:
      A `StatefulClientProcess`. Server state: ``OrderedDict(
      global_model_weights, client_hparams, round_num, aggregator,
      finalizer)``; client state: ``OrderedDict(statistics=[...],
      has_statistics=<bool>)``; metrics: ``OrderedDict(client_work=
      OrderedDict(train=...), aggregator=..., finalizer=...)``.

    Raises:
      ValueError: For a negative μ, an unknown weighting, or a model without
        non-trainable variables.
    """
    check_weighting("client_weighting", client_weighting)
    proximal_strength = check_proximal_strength(proximal_strength)
    initial_weights, weights_type, batches_type, aggregate_metrics = model_types(model_fn)
    if not weights_type.non_trainable:
        raise ValueError(
            "build_with_local_statistics: the model has no non-trainable variables, so there "
            "are no statistics to keep per client; use build_learning_process."
        )
    data_type = client_data_type(batches_type, client_weighting)
    num_trainable = len(weights_type.trainable)
    stats_types = list(weights_type.non_trainable)
    aggregator = model_aggregator.create(weights_type.trainable, tff.TensorType(np.float32))
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
        server_optimizer, weights_type
    )
    hparams, plan_fn, local_update = client_round(
        model_fn,
        client_optimizer,
        trainable_schedule,
        num_trainable,
        proximal_strength=proximal_strength,
        client_weighting=client_weighting,
    )

    @tff.tensorflow.computation()
    def initial_hparams():
        return tf.nest.map_structure(tf.constant, hparams)

    @tff.tensorflow.computation()
    def initial_client_state():
        return collections.OrderedDict(
            statistics=[tf.zeros(t.shape, t.dtype) for t in stats_types],
            has_statistics=tf.constant(False),
        )

    client_state_type = initial_client_state.type_signature.result

    initialize = server_initialize(
        global_model_weights=initial_weights,
        client_hparams=initial_hparams,
        round_num=np.int32(0),
        aggregator=aggregator.initialize,
        finalizer=finalizer.initialize,
    )

    server_state_type = initialize.type_signature.result

    @tff.tensorflow.computation(server_state_type.member)
    def round_plan(state):
        return plan_fn(state["client_hparams"], state["round_num"])

    plan_type = round_plan.type_signature.result

    @tff.tensorflow.computation(plan_type, weights_type, data_type, client_state_type)
    def client_update(plan, global_weights, data, client_state):
        # Trainable weights from the server, statistics of the client's own.
        own = client_state["has_statistics"]
        start_stats = [
            tf.where(own, mine, theirs)
            for mine, theirs in zip(
                client_state["statistics"], global_weights.non_trainable, strict=True
            )
        ]
        start = ModelWeights(trainable=list(global_weights.trainable), non_trainable=start_stats)
        update, weight, trained, metrics = local_update(plan, start, data)
        stats = list(trained.non_trainable)
        kept = tf.logical_and(weight > 0, all_finite(stats))
        new_state = collections.OrderedDict(
            statistics=[tf.where(kept, s, s0) for s, s0 in zip(stats, start_stats, strict=True)],
            has_statistics=tf.logical_or(own, kept),
        )
        stats_weight = tf.where(kept, weight, 0.0)
        weighted = [tf.where(kept, stats_weight * s, tf.zeros_like(s)) for s in stats]
        result = tff.learning.templates.ClientResult(update=update, update_weight=weight)
        return result, new_state, (weighted, stats_weight), metrics

    summed_type = client_update.type_signature.result[2]

    @tff.tensorflow.computation(np.int32)
    def increment(value):
        return value + 1

    @tff.tensorflow.computation(weights_type, summed_type)
    def global_statistics(weights, summed):
        total, weight = summed
        stats = [
            tf.where(weight > 0, t / tf.maximum(weight, 1e-30), old)
            for t, old in zip(total, weights.non_trainable, strict=True)
        ]
        return ModelWeights(trainable=list(weights.trainable), non_trainable=stats)

    @tff.federated_computation(
        server_state_type,
        tff.FederatedType(data_type, tff.CLIENTS),
        tff.FederatedType(client_state_type, tff.CLIENTS),
    )
    def next_fn(state, data, client_states):
        # Client computation: train from the global weights and the own statistics.
        plan = tff.federated_broadcast(tff.federated_map(round_plan, state))
        weights = tff.federated_broadcast(state.global_model_weights)
        result, new_client_states, stats, model_metrics = tff.federated_map(
            client_update, (plan, weights, data, client_states)
        )
        # Aggregation and the server step, as in TFF's FedAvg composition.
        aggregated = aggregator.next(state.aggregator, result.update, result.update_weight)
        applied = finalizer.next(state.finalizer, state.global_model_weights, aggregated.result)
        # The global model carries the round's weighted mean of the clients' statistics.
        new_weights = tff.federated_map(
            global_statistics, (applied.result, tff.federated_sum(stats))
        )
        new_state = tff.federated_zip(
            collections.OrderedDict(
                global_model_weights=new_weights,
                client_hparams=state.client_hparams,
                round_num=tff.federated_map(increment, state.round_num),
                aggregator=aggregated.state,
                finalizer=applied.state,
            )
        )
        metrics = tff.federated_zip(
            collections.OrderedDict(
                client_work=collections.OrderedDict(train=aggregate_metrics(model_metrics)),
                aggregator=aggregated.measurements,
                finalizer=applied.measurements,
            )
        )
        return StatefulOutput(state=new_state, client_states=new_client_states, metrics=metrics)

    return StatefulClientProcess(initialize, next_fn, initial_client_state)
