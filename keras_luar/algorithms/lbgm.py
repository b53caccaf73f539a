"""LBGM, the look-back gradient multiplier, as a federated process with per-client state.

LBGM (Azam et al., ICLR 2022) rests on the observation that the updates a
client produces in successive rounds span a space of low rank, so a new update
is often close to a multiple of an old one. Each client keeps, per trainable
tensor, a *look-back gradient* g_lb: the last update of that tensor it sent
in full. After local training the client forms its accumulated update g of
the tensor and measures how well g_lb represents it:

    ρ = <g, g_lb> / ||g_lb||²        (the best multiplier)
    error = 1 − cos²(g, g_lb)        (= ||g − ρ·g_lb||² / ||g||²)

If ``error <= threshold`` the client sends the single number ρ and the server,
which holds its own copy of every client's g_lb, uses ρ·g_lb in place of g.
Otherwise (and always while the client has no g_lb for the tensor) the client
sends g in full, and both sides set g_lb ← g. So g_lb changes only on a full
send, and the server's copy stays equal to the client's.

Conventions of this implementation (and where it departs from the official code):

* **The update.** g is the update accumulated over the round's τ local steps.
  (The official federated loop takes one local step per round, so its g is
  a single gradient.) Without a g_lb the client always sends in full; the
  official code sets the error to 1 there, so with threshold 1 it would take
  the scalar branch with no ρ.
* **Sign.** g is TFF's client update, ``initial − trained`` (the negative of
  the paper's Δ = trained − initial). ρ, the error and the decision are the
  same under either sign; the reconstruction ρ·g_lb carries TFF's sign, and
  the server optimizer receives the mean of the reconstructions as TFF's
  finalizer does: with SGD(1), x_{t+1} = x_t − mean(ρ·g_lb or g).
* **Simulation shortcut.** Because the server's copy of a client's g_lb equals
  the client's, the client computes the reconstruction ρ·g_lb itself and the
  simulation moves that dense tensor; the server never stores look-back
  gradients. The accounting counts what a deployment sends: one float32 for
  a tensor sent as a scalar, ``numel`` float32 for a tensor sent in full.
* **Clients that do not take part** keep their state unchanged (the
  official loop also trains the clients that were not sampled and updates
  their residuals). A client
  whose update or reconstruction is not finite is dropped from the average
  (weight 0, update zeroed) and keeps its previous state too; its upload is
  still counted as decided (a non-finite error always means a full send).
* **Weighting.** ``client_weighting="example"`` (the default) weights
  client i by n_i, the size of its local data set, and the server takes the
  weighted mean over the participating clients. The official code multiplies
  each client's gradient by n_i/N, with N the total over *all* clients, and
  sums over the sampled clients: the same weighted mean when every client
  takes part, and a step shrunk by the sampled clients' share of the data
  otherwise. ``"uniform"`` weights every client by 1.
* **Server step.** The official server applies the summed gradients with
  heavy-ball momentum (``model_update`` in ``src/models/model_op.py``; the
  published scripts use momentum 0.9), after clients that took one gradient
  step each and no local momentum. Here clients take τ local steps with the
  client optimizer (as in every method of this package), and the server
  optimizer receives the weighted mean update: by default SGD with learning
  rate 1 and no momentum, FedAvg's step. ``server_momentum=m`` gives the
  official heavy-ball step (SGD with learning rate 1 and momentum m on the
  mean update); any other server optimizer may be passed instead.
* **BatchNorm statistics** (``bn_statistics="average"``, the only rule):
  clients start from the global statistics, and the weighted mean of theirs
  after training becomes the global model's (the FedLUAR paper's LBGM solver
  averages them the same way).

``variant="paper"`` is the LBGM baseline of the FedLUAR paper (Kim, Kang & Lee,
2025), as its official solver does it (swblaster/FedLUAR at commit a009835,
``solvers/LBGM.py``; the file was removed later): state per process slot, one
decision for the whole model taken on raw gradient sums, scalar sends that scale
the slot's last full update, one number per tensor for a scalar send, uniform
weighting. `keras_luar.algorithms.look_back` describes both decisions in full,
with the official code's zero-norm and error-feedback details.

References:
  Azam, Hosseinalipour, Qiu, Brinton. "Recycling Model Updates in Federated
  Learning: Are Gradient Subspaces Low-Rank?", ICLR 2022. Official code:
  https://github.com/shams-sam/FedOptim (``src/models/model_op.py``,
  ``lbgm_approximation``).

  Kim, Kang, Lee. "Layer-wise Update Aggregation with Recycling for
  Communication-Efficient Federated Learning", 2025 (its LBGM baseline).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Literal

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar._federated import server_initialize
from keras_luar._types import ClientWeighting
from keras_luar._validation import check_bool, check_choice, check_float
from keras_luar.aggregators.measurements import communication_measurements
from keras_luar.algorithms.local_training import (
    build_local_training,
    model_types,
    optimizer_hparams,
)
from keras_luar.algorithms.look_back import (
    DEFAULT_WEIGHTINGS,
    check_configuration,
    client_report,
    consistent,
    official_decision,
    paper_decision,
)
from keras_luar.algorithms.registry import builtin
from keras_luar.algorithms.spec import BuildContext, Option
from keras_luar.algorithms.stateful import (
    StatefulClientProcess,
    StatefulOutput,
    trainable_sizes,
)
from keras_luar.algorithms.weighting import (
    client_data_type,
    client_weight,
    unpack_client_data,
)

ModelWeights = tff.learning.models.ModelWeights
Variant = Literal["official", "paper"]

BYTES_PER_FLOAT = 4  # every number sent counts as a float32


def build_lbgm(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer | None = None,
    local_steps: int,
    threshold: float | None = None,
    error_feedback: bool = False,
    client_weighting: ClientWeighting | None = None,
    variant: Variant = "official",
    server_momentum: float = 0.0,
    seed: int = 0,
) -> StatefulClientProcess:
    """Builds LBGM as a `StatefulClientProcess` (each client keeps its look-back gradients).

    Each round the sampled clients train from the global weights on the
    batches they are given (the driver gives τ = `local_steps` batches), form
    their update per trainable tensor, and send either the multiplier ρ or the
    full tensor (see the module docstring). The server averages the
    reconstructed updates and applies `server_optimizer`, as TFF's FedAvg does.
    BatchNorm statistics are averaged (see the module docstring).

    The client state of ``"official"`` is ``OrderedDict(look_back=[g_lb per
    trainable tensor], has_look_back=bool[num_trainable])``, plus
    ``residual=[r per trainable tensor]`` with error feedback; of
    ``"paper"`` (one per slot) ``OrderedDict(look_back=[gradient sums],
    last_delta=[updates of the last full send], has_look_back=bool,
    has_last_delta=bool)``. The server state is
    ``OrderedDict(global_model_weights, client_hparams, server_optimizer)``.
    The metrics are ``OrderedDict(client_work=OrderedDict(train=...),
    communication=OrderedDict(upload_params, upload_bytes, aggregated),
    lbgm=OrderedDict(scalar_fraction, mean_error, num_dropped_clients))``:
    `aggregated` is, per trainable tensor, the fraction of participating
    clients that sent it in full (and were not dropped); `scalar_fraction` the
    fraction of (client, tensor) pairs sent as a scalar; `mean_error` the mean
    projection error over the (finite client, tensor) pairs that had a g_lb
    (0 if none).

    Args:
      model_fn: A no-argument callable returning a new
        `tff.learning.models.VariableModel`.
      client_optimizer: The clients' `tff.learning.optimizers.Optimizer`
        (fresh optimizer state every round). Its hyper-parameters are the
        server state's ``client_hparams``.
      server_optimizer: A `tff.learning.optimizers.Optimizer` applied to the
        averaged update; None is SGD with learning rate 1 and momentum
        `server_momentum`.
      local_steps: τ, the number of batches each client trains on per round
        (an int >= 1). The driver feeds that many batches; the process checks
        the value only.
      threshold: The largest projection error 1 − cos²(g, g_lb) that is sent
        as a scalar, a float in [0, 1]. None is 0.2 for ``"official"`` (a
        value of the official experiments) and 0.95 for ``"paper"``.
        0 lets only exact multiples of g_lb through (in floating point: in
        practice g = 0 or a bit-for-bit repeat of g_lb); 1 sends every
        tensor as a scalar once a client has its g_lb.
      error_feedback: Whether clients keep the residual of scalar sends and
        add it to their next update (``"official"`` only).
      client_weighting: See `keras_luar.algorithms.weighting`; None is
        ``"example"`` (data set size; the client data is then a
        `SizedClientData`) for ``"official"`` and ``"uniform"`` for
        ``"paper"``, as their code does.
      variant: ``"official"`` (per-tensor decisions, g_lb changes only on a
        full send) or ``"paper"`` (the FedLUAR paper's baseline; see the
        module docstring).
      server_momentum: Momentum of the default server SGD (learning rate 1);
        0.9 is the official LBGM server step. Only without `server_optimizer`.
      seed: Accepted for the common builder signature; LBGM draws no random
        numbers.

    Returns:
      A `keras_luar.algorithms.stateful.StatefulClientProcess`; for
      ``"paper"`` its client states are per slot (``client_states_by="slot"``).

    Raises:
      TypeError: If `model_fn` is not callable or an optimizer is not a
        `tff.learning.optimizers.Optimizer`.
      ValueError: If `threshold`, `local_steps`, `error_feedback`,
        `client_weighting`, `variant`, `server_momentum` or `seed` is invalid,
        or if a server optimizer and a server momentum are both given.

    Examples:
      >>> process = build_lbgm(  # doctest: +SKIP
      ...     model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(0.05),
      ...     local_steps=20, threshold=0.2)
      >>> state = process.initialize()  # doctest: +SKIP
      >>> client_states = {c: process.initial_client_state() for c in ids}  # doctest: +SKIP
      >>> out = process.next(state, [data[c] for c in chosen],  # doctest: +SKIP
      ...                    [client_states[c] for c in chosen])

    References:
      Azam, Hosseinalipour, Qiu, Brinton. "Recycling Model Updates in
      Federated Learning: Are Gradient Subspaces Low-Rank?", ICLR 2022.
    """
    threshold, client_weighting = check_configuration(dict(locals()))
    if server_optimizer is None:
        server_optimizer = tff.learning.optimizers.build_sgdm(1.0, momentum=server_momentum or None)
    paper = variant == "paper"

    initial_weights, weights_type, batches_type, aggregate_metrics = model_types(model_fn)
    data_type = client_data_type(batches_type, client_weighting)
    trainable_types = list(weights_type.trainable)
    num_trainable = len(trainable_types)
    has_stats = len(weights_type.non_trainable) > 0
    sizes = np.asarray(trainable_sizes(weights_type), np.int64)
    hparams = optimizer_hparams(client_optimizer)
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
        server_optimizer, weights_type
    )

    def zeros():
        return [tf.zeros(t.shape, t.dtype) for t in trainable_types]

    @tff.tensorflow.computation()
    def initial_hparams():
        return tf.nest.map_structure(tf.constant, hparams)

    @tff.tensorflow.computation()
    def initial_client_state():
        if paper:
            return collections.OrderedDict(
                look_back=zeros(),
                last_delta=zeros(),
                has_look_back=tf.constant(False),
                has_last_delta=tf.constant(False),
            )
        state = collections.OrderedDict(
            look_back=zeros(), has_look_back=tf.zeros([num_trainable], tf.bool)
        )
        if error_feedback:
            state["residual"] = zeros()
        return state

    client_state_type = initial_client_state.type_signature.result
    hparams_type = initial_hparams.type_signature.result
    decide = paper_decision if paper else official_decision

    @tff.tensorflow.computation(hparams_type, weights_type, data_type, client_state_type)
    def client_update(client_hparams, global_weights, data, client_state):
        # Step 1: local training and the update g (TFF's sign: initial − trained).
        batches, data_size = unpack_client_data(data, client_weighting)
        _, train = build_local_training(model_fn, client_optimizer, accumulate_gradients=paper)
        trained, num_examples, metrics, *grad_sum = train(global_weights, batches, client_hparams)
        g = [
            a - b
            for a, b in zip(
                tf.nest.flatten(global_weights.trainable),
                tf.nest.flatten(trained.trainable),
                strict=True,
            )
        ]
        # Steps 2-3: the scalar/full decision, the reconstruction the server uses,
        # the client's new state and its upload in numbers.
        if paper:
            decision = decide(g, grad_sum[0], client_state, threshold, sizes)
        else:
            decision = decide(g, client_state, threshold, sizes, error_feedback)
        weight = client_weight(client_weighting, num_examples, data_size)
        weighted, new_state, stats = client_report(decision, g, client_state, weight, trained)
        return weighted, new_state, stats, metrics

    update_type = weights_type.trainable
    stats_type = client_update.type_signature.result[2]

    @tff.tensorflow.computation(update_type, stats_type)
    def server_summary(weighted_sum, stats):
        mean_update = tf.nest.map_structure(
            lambda s: tf.math.divide_no_nan(s, stats["weight"]), weighted_sum
        )
        clients = tf.cast(stats["participants"], tf.float32)
        communication = communication_measurements(
            upload_params=stats["upload_params"],
            upload_bytes=stats["upload_params"] * BYTES_PER_FLOAT,
            aggregated=tf.math.divide_no_nan(stats["aggregated"], clients),
        )
        lbgm = collections.OrderedDict(
            scalar_fraction=tf.math.divide_no_nan(stats["num_scalar"], clients * num_trainable),
            mean_error=tf.math.divide_no_nan(stats["error_sum"], stats["error_count"]),
            num_dropped_clients=stats["dropped"],
        )
        return mean_update, communication, lbgm

    @tff.tensorflow.computation(weights_type, stats_type)
    def adopt_statistics(weights, stats):
        if not has_stats:
            return weights
        total = stats["statistics_weight"]
        new = [
            tf.where(total > 0, s / tf.maximum(total, 1e-30), old)
            for s, old in zip(stats["statistics"], weights.non_trainable, strict=True)
        ]
        return ModelWeights(trainable=list(weights.trainable), non_trainable=new)

    initialize = server_initialize(
        global_model_weights=initial_weights,
        client_hparams=initial_hparams,
        server_optimizer=finalizer.initialize,
    )

    server_state_type = initialize.type_signature.result

    @tff.federated_computation(
        server_state_type,
        tff.FederatedType(data_type, tff.CLIENTS),
        tff.FederatedType(client_state_type, tff.CLIENTS),
    )
    def next_fn(state, data, client_states):
        # Client computation: train, decide, reconstruct.
        weights = tff.federated_broadcast(state.global_model_weights)
        client_hparams = tff.federated_broadcast(state.client_hparams)
        weighted, new_client_states, stats, model_metrics = tff.federated_map(
            client_update, (client_hparams, weights, data, client_states)
        )
        # Aggregation: sums of the weighted reconstructions and of the statistics.
        weighted_sum = tff.federated_sum(weighted)
        stats_sum = tff.federated_sum(stats)
        # Server computation: weighted mean, then the server optimizer on it.
        mean_update, communication, lbgm = tff.federated_map(
            server_summary, (weighted_sum, stats_sum)
        )
        applied = finalizer.next(state.server_optimizer, state.global_model_weights, mean_update)
        # Output preparation.
        new_state = tff.federated_zip(
            collections.OrderedDict(
                global_model_weights=tff.federated_map(
                    adopt_statistics, (applied.result, stats_sum)
                ),
                client_hparams=state.client_hparams,
                server_optimizer=applied.state,
            )
        )
        client_work = tff.federated_zip(
            collections.OrderedDict(train=aggregate_metrics(model_metrics))
        )
        metrics = tff.federated_zip(
            collections.OrderedDict(client_work=client_work, communication=communication, lbgm=lbgm)
        )
        return StatefulOutput(state=new_state, client_states=new_client_states, metrics=metrics)

    return StatefulClientProcess(
        initialize,
        next_fn,
        initial_client_state,
        client_states_by="slot" if paper else "client",
    )


def _check(options, server_optimizer_given: bool) -> None:
    consistent(
        options["error_feedback"], options["lbgm_variant"], options["server_momentum"],
        server_optimizer_given,
    )  # fmt: skip


def _build(context: BuildContext) -> StatefulClientProcess:
    options = context.options
    return build_lbgm(
        context.model_fn,
        client_optimizer=context.client_optimizer,
        server_optimizer=context.server_optimizer,
        local_steps=context.local_steps,
        threshold=options["lbgm_threshold"],
        error_feedback=options["error_feedback"],
        client_weighting=context.client_weighting,
        variant=options["lbgm_variant"],
        server_momentum=options["server_momentum"],
        seed=context.seed,
    )


OPTIONS = {
    "lbgm_threshold": Option(
        None,
        lambda n, v: None if v is None else check_float(n, v, 0.0, 1.0),
        "largest 1 − cos² sent as a scalar (None: 0.2 official, 0.95 paper)",
    ),
    "error_feedback": Option(False, check_bool, "keep the residual of scalar sends"),
    "lbgm_variant": Option(
        "official",
        lambda n, v: check_choice(n, v, ("official", "paper")),
        "'official' (FedOptim) or 'paper' (the FedLUAR paper's baseline)",
    ),
    "server_momentum": Option(
        0.0,
        lambda n, v: check_float(n, v, 0.0, 1.0, open_high=True),
        "momentum of the server SGD (official: 0.9)",
    ),
}


def _weighting(options):
    return DEFAULT_WEIGHTINGS[options["lbgm_variant"]]


SPEC = builtin("lbgm", _build, options=OPTIONS, client_weighting=_weighting, check=_check)
