"""Gives a `LuarFactory` inside a TFF learning process the global weight norms.

FedLUAR scores a layer by ||update|| / ||global weight||, but a TFF
aggregator only ever sees client updates. `with_global_weight_norms` wraps a
`tff.learning.templates.LearningProcess` so that each `next` first computes,
at the server, the Frobenius norm of every candidate of
``state.global_model_weights.trainable`` (the weights x_t at the start of the
round) and writes them into the ``weight_norms`` slot of every `LuarState` in
``state.aggregator``. The rest of the process is untouched, so TFF's builders,
server optimizers, `tff.learning.programs.train_model` and program-state
checkpoints keep working.
"""

from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import _runtime, layers, scoring
from keras_luar.aggregators.luar import LuarState
from keras_luar.algorithms.stateful import with_next


def _luar_state_types(type_spec, path=()):
    """Yields (path, type) of every LuarState struct inside `type_spec`."""
    if isinstance(type_spec, tff.StructWithPythonType) and type_spec.python_container is LuarState:
        yield path, type_spec
        return
    if isinstance(type_spec, tff.StructType):
        for i, (_, element) in enumerate(tff.structure.iter_elements(type_spec)):
            yield from _luar_state_types(element, path + (i,))


def _replace_luar_states(value, fn):
    """Returns `value` with `fn` applied to every `LuarState` in it."""
    if isinstance(value, LuarState):
        return fn(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*[_replace_luar_states(v, fn) for v in value])
    if isinstance(value, collections.OrderedDict | dict):
        return type(value)((k, _replace_luar_states(v, fn)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return type(value)(_replace_luar_states(v, fn) for v in value)
    return value


def with_global_weight_norms(
    process: tff.learning.templates.LearningProcess,
) -> tff.learning.templates.LearningProcess:
    """Wraps a learning process so its `LuarFactory` scores use ||x_t,l||.

    Args:
      process: A `tff.learning.templates.LearningProcess` whose server state
        has ``global_model_weights`` and a `LuarState` somewhere under
        ``aggregator`` (e.g. built by `tff.learning.algorithms.build_weighted_fed_avg`
        or `build_weighted_fed_prox` with ``model_aggregator=LuarFactory(...)``).

    Returns:
      A `LearningProcess` with the same `initialize`, state, metrics and
      weight/hparam accessors, whose `next` writes the norms first.

    Raises:
      TypeError: If `process` is not a `LearningProcess`.
      ValueError: If its state has no `LuarState` or no ``global_model_weights``,
        or if the LUAR candidates do not match the global model's.

    Examples:
      >>> process = tff.learning.algorithms.build_weighted_fed_avg(  # doctest: +SKIP
      ...     model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      ...     model_aggregator=keras_luar.LuarFactory(2))
      >>> process = keras_luar.with_global_weight_norms(process)  # doctest: +SKIP
    """
    _runtime.install()  # TFF computations follow: guard its worker processes
    if not isinstance(process, tff.learning.templates.LearningProcess):
        raise TypeError(
            "Invalid value for argument `process`. Expected a "
            "tff.learning.templates.LearningProcess. Received: "
            f"process={type(process).__name__}"
        )
    state_type = process.initialize.type_signature.result
    server_state_type = state_type.member
    names = [n for n, _ in tff.structure.iter_elements(server_state_type)]
    if "global_model_weights" not in names:
        raise ValueError(
            "with_global_weight_norms: the process state has no `global_model_weights` "
            f"field. Received a state of type {server_state_type}"
        )
    found = list(_luar_state_types(server_state_type))
    if not found:
        raise ValueError(
            "with_global_weight_norms: no LuarFactory state found in the process state. "
            "Build the process with `model_aggregator=keras_luar.LuarFactory(...)`."
        )
    global_layout = layers.describe_weights_type(server_state_type.global_model_weights)
    cand_idx = global_layout.candidate_indices
    for path, luar_type in found:
        shapes = [tuple(t.shape) for t in luar_type.last_updates]
        expected = [v.shape for v in global_layout.candidates]
        if shapes != expected:
            raise ValueError(
                "with_global_weight_norms: the LuarFactory at state path "
                f"{path} aggregates candidates of shapes {shapes}, but the global "
                f"model's candidates have shapes {expected}."
            )

    @tff.tensorflow.computation(server_state_type)
    def write_norms(state):
        trainable = tf.nest.flatten(state.global_model_weights.trainable)
        norms = scoring.frobenius_norms([trainable[i] for i in cand_idx])
        return _replace_luar_states(state, lambda s: s._replace(weight_norms=norms))

    param = process.next.type_signature.parameter
    state_param, data_param = param[0], param[1]

    @tff.federated_computation(state_param, data_param)
    def next_fn(state, data):
        return process.next(tff.federated_map(write_norms, state), data)

    return with_next(process, next_fn)
