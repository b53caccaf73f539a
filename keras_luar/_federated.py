"""Small pieces of TFF federated code that several processes build the same way."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import tensorflow_federated as tff


def server_and_clients(server_type: Any, *client_types: Any) -> tuple[tff.FederatedType, ...]:
    """The parameter types of a ``next``: one value at the server, then values at the clients."""
    return (
        tff.FederatedType(server_type, tff.SERVER),
        *(tff.FederatedType(t, tff.CLIENTS) for t in client_types),
    )


def state_around_inner(
    inner_process: tff.templates.AggregationProcess, init_state: Callable[[Any], Any]
) -> tuple[tff.Computation, Any, tff.Computation]:
    """The state of an aggregation process that holds `inner_process`'s state in ``inner``.

    Args:
      inner_process: The wrapped process.
      init_state: ``init_state(inner_state) -> state``, TF code traced once.

    Returns:
      ``(initialize, state_type, get_inner)``: the federated ``initialize``
      computation, the (unplaced) state type, and a TF computation from the
      state to its ``inner`` field.
    """
    inner_state_type = inner_process.initialize.type_signature.result.member

    @tff.tensorflow.computation(inner_state_type)
    def init_tf(inner):
        return init_state(inner)

    @tff.federated_computation()
    def initialize():
        return tff.federated_map(init_tf, inner_process.initialize())

    state_type = init_tf.type_signature.result

    @tff.tensorflow.computation(state_type)
    def get_inner(state):
        return state.inner

    return initialize, state_type, get_inner


def server_initialize(**parts: Any) -> tff.Computation:
    """The federated ``initialize`` of a server state made of named `parts`.

    Each part is a no-argument TFF computation: TensorFlow code is evaluated at
    the server, a federated computation (an inner process's ``initialize``) is
    called; any other value is a constant placed at the server. The state is an
    ``OrderedDict`` of the parts, in the given order, at the server.
    """

    def value(part):
        if not isinstance(part, tff.Computation):
            return tff.federated_value(part, tff.SERVER)
        if isinstance(part.type_signature.result, tff.FederatedType):
            return part()
        return tff.federated_eval(part, tff.SERVER)

    @tff.federated_computation()
    def initialize():
        return tff.federated_zip(
            collections.OrderedDict((name, value(part)) for name, part in parts.items())
        )

    return initialize
