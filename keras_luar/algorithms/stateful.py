"""A federated process whose clients keep state between rounds (LBGM, FedLAMA).

TFF's `LearningProcess` keeps all state at the server. Methods such as LBGM
(each client keeps a look-back gradient per tensor) or FedLAMA (clients keep
their local copy of variables that are not synchronized this round) need state
that lives on a client, keyed by a stable client id. In a simulation the
driver (e.g. `keras_luar.FederatedTrainer`) holds those states and passes the
sampled clients' states in with their data; `next` returns the updated ones
as a CLIENTS-placed value, in the same order:

    state = process.initialize()
    client_states = {cid: process.initial_client_state() for cid in ids}
    out = process.next(state, [data[c] for c in chosen], [client_states[c] for c in chosen])
    state = out.state
    client_states.update(zip(chosen, out.client_states))

Conventions shared by every such process, which the trainer relies on:

* the server state is an `OrderedDict` with at least ``global_model_weights``
  (a `tff.learning.models.ModelWeights`) and ``client_hparams`` (the client
  optimizer's hyper-parameters, e.g. the learning rate);
* the metrics are an `OrderedDict` with ``client_work=OrderedDict(train=<model
  metrics>)`` and ``communication`` (see
  `keras_luar.aggregators.measurements.communication_measurements`).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow_federated as tff


class StatefulOutput(NamedTuple):
    """What `StatefulClientProcess.next` returns."""

    state: Any  # server state, placed at SERVER
    client_states: Any  # one state per participating client, placed at CLIENTS
    metrics: Any  # OrderedDict(client_work=..., communication=..., ...) at SERVER


class StatefulClientProcess:
    """A federated training process with per-client state.

    Args:
      initialize: A `tff.Computation` with no argument returning the server
        state placed at SERVER.
      next: A `tff.Computation` ``(state@SERVER, data@CLIENTS,
        client_states@CLIENTS) -> StatefulOutput``.
      initial_client_state: A `tff.Computation` with no argument returning the
        (unplaced) state of a client that has never taken part.
      client_period: Clients are re-sampled only every `client_period` rounds
        and the same clients take part in between (FedLAMA's φ; 1 otherwise).
      client_states_by: ``"client"`` (default): a state belongs to a client
        id and comes back with that client. ``"slot"``: a state belongs to a
        position in the round's list of sampled clients, as a process slot of
        an MPI implementation does, whichever client is sampled there (the
        FedLUAR paper's LBGM baseline).

    Raises:
      TypeError: If a computation is missing or `client_period` is not an int >= 1.
      ValueError: If `client_states_by` is not ``"client"`` or ``"slot"``.
    """

    def __init__(
        self,
        initialize: tff.Computation,
        next: tff.Computation,  # noqa: A002 - the name TFF's processes use
        initial_client_state: tff.Computation,
        *,
        client_period: int = 1,
        client_states_by: str = "client",
    ):
        for name, value in (
            ("initialize", initialize),
            ("next", next),
            ("initial_client_state", initial_client_state),
        ):
            if not isinstance(value, tff.Computation):
                raise TypeError(
                    f"Invalid value for argument `{name}`. Expected a tff.Computation. "
                    f"Received: {type(value).__name__}"
                )
        if (
            isinstance(client_period, bool)
            or not isinstance(client_period, int)
            or client_period < 1
        ):
            raise TypeError(
                "Invalid value for argument `client_period`. Expected an int >= 1. "
                f"Received: client_period={client_period!r}"
            )
        if client_states_by not in ("client", "slot"):
            raise ValueError(
                "Invalid value for argument `client_states_by`. Expected 'client' or 'slot'. "
                f"Received: client_states_by={client_states_by!r}"
            )
        self.client_states_by = client_states_by
        self.initialize = initialize
        self.next = next
        self.initial_client_state = initial_client_state
        self.client_period = client_period
        state_type = initialize.type_signature.result.member
        self._get_weights, self._set_weights = _field_accessors(state_type, "global_model_weights")
        self._get_hparams, self._set_hparams = _field_accessors(state_type, "client_hparams")

    def get_model_weights(self, state: Any) -> tff.learning.models.ModelWeights:
        """The global model weights held in `state`."""
        return self._get_weights(state)

    def set_model_weights(self, state: Any, weights: Any) -> Any:
        """`state` with its global model weights replaced by `weights`."""
        return self._set_weights(state, weights)

    def get_hparams(self, state: Any) -> collections.OrderedDict:
        """Hyper-parameters in the layout of TFF's processes: ``{"client_work": {...}}``."""
        return collections.OrderedDict(client_work=self._get_hparams(state))

    def set_hparams(self, state: Any, hparams: Any) -> Any:
        """`state` with the client hyper-parameters of `hparams` (as `get_hparams` returns)."""
        return self._set_hparams(state, hparams["client_work"])


def _field_accessors(state_type, field: str):
    names = [n for n, _ in tff.structure.iter_elements(state_type)]
    if field not in names:
        raise TypeError(
            f"StatefulClientProcess: the server state must have a `{field}` field. "
            f"Received a state of type {state_type}"
        )
    field_type = state_type[field]

    @tff.tensorflow.computation(state_type)
    def get(state):
        return state[field]

    @tff.tensorflow.computation(state_type, field_type)
    def set_(state, value):
        new = collections.OrderedDict((n, state[n]) for n in names)
        new[field] = value
        return new

    return get, set_


def trainable_sizes(weights_type: Any) -> Sequence[int]:
    """Number of scalars of each trainable variable of a `ModelWeights` TFF type."""
    return [int(np.prod(t.shape)) for t in weights_type.trainable]


def with_next(process: Any, next_fn: Any) -> Any:
    """`process` (a TFF `LearningProcess`) with `next_fn` in place of its `next`."""
    return tff.learning.templates.LearningProcess(
        process.initialize,
        next_fn,
        process.get_model_weights,
        process.set_model_weights,
        get_hparams_fn=process.get_hparams,
        set_hparams_fn=process.set_hparams,
    )
