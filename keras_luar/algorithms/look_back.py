"""LBGM's mechanics: a client's (or slot's) decision to send ρ or its update, and the rules.

`projection` gives ρ = <g, g_lb>/||g_lb||² and the error 1 − cos²(g, g_lb);
`official_decision` applies it per tensor (FedOptim's ``lbgm_approximation``),
`paper_decision` to the whole model as the FedLUAR paper's solver does (see
`keras_luar.algorithms.lbgm` for both). Plain TensorFlow, called inside the
process's client computation.

Per tensor, the official way (FedOptim):

* **Zero norms.** If g = 0, it is exactly 0·g_lb: error 0, ρ 0 (a scalar send
  when the client has a g_lb). If g ≠ 0 and g_lb = 0: error 1, ρ 0. The
  official code divides by zero in both cases.
* **Error feedback** (``error_feedback=True``, off by default as in the
  official experiments): the client keeps a residual r (zeros at first). Its
  round-t update is g_t = (initial − trained) + r_{t−1}; the decision, ρ and
  a new g_lb are all computed from this g_t. After a scalar send
  r_t = g_t − ρ·g_lb, after a full send r_t = 0 (as in the official
  ``lbgm_approximation``). Since r_t is orthogonal to g_lb, it leaves the
  next ρ unchanged while g_lb stays the same: it acts through the error (the
  next decision) and through the content of the next full send.

The FedLUAR paper's way (`paper_decision`):

* **State per slot, not per client.** The solver keeps its look-back state in
  process slots, and each round a slot trains whichever client was sampled
  into it. So does this variant: the driver passes the state of position k of
  the round's sampled clients (`StatefulClientProcess.client_states_by` is
  ``"slot"``). The official code shares ``last_delta`` among the slots of one
  MPI process (4 with its 8-process, 32-client configuration); here each slot
  is its own process.
* **Decision on gradients.** The slot's look-back g_lb is the sum of the raw
  loss gradients of the *previous* round's local steps, overwritten every
  round. From its second round a slot computes, over all tensors
  concatenated, error = 1 − cos²(a, g_lb) and ρ = <a, g_lb> / ||g_lb||² for
  this round's gradient sum a, and sends the scalar iff error <= threshold
  (default 0.95).
* **Reconstruction from the last full send.** A scalar send is reconstructed
  as ρ times the slot's ``last_delta``, the weight update of its last full
  send (per tensor); a full send sends the update and replaces
  ``last_delta``.
* **Cost.** A scalar send costs one number per tensor (the official count),
  a full send every parameter.
* **Weighting and server.** Uniform mean over the round's clients added to
  the global weights (SGD with learning rate 1, no momentum), statistics
  averaged: the solver's defaults. Error feedback is not part of it.
"""

from __future__ import annotations

import collections
import numbers

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar._validation import check_weighting
from keras_luar.algorithms.local_training import all_finite

DEFAULT_THRESHOLDS = {"official": 0.2, "paper": 0.95}
DEFAULT_WEIGHTINGS = {"official": "example", "paper": "uniform"}


def official_decision(g, client_state, threshold, sizes, error_feedback):
    """Per-tensor LBGM (FedOptim's ``lbgm_approximation``) for one client."""
    num_trainable = len(g)
    look_back = list(client_state["look_back"])
    has_look_back = client_state["has_look_back"]
    if error_feedback:
        g = [gi + ri for gi, ri in zip(g, client_state["residual"], strict=True)]
    dot = tf.stack([tf.reduce_sum(gi * li) for gi, li in zip(g, look_back, strict=True)])
    g_sq = tf.stack([tf.reduce_sum(tf.square(gi)) for gi in g])
    lb_sq = tf.stack([tf.reduce_sum(tf.square(li)) for li in look_back])
    rho, error = projection(dot, g_sq, lb_sq)
    scalar = has_look_back & (error <= threshold) & tf.math.is_finite(error)
    reconstruction = [
        tf.where(scalar[i], rho[i] * look_back[i], g[i]) for i in range(num_trainable)
    ]
    new_state = collections.OrderedDict(
        look_back=[tf.where(scalar[i], look_back[i], g[i]) for i in range(num_trainable)],
        has_look_back=tf.ones([num_trainable], tf.bool),
    )
    if error_feedback:
        new_state["residual"] = [
            tf.where(scalar[i], g[i] - reconstruction[i], tf.zeros_like(g[i]))
            for i in range(num_trainable)
        ]
    upload = tf.reduce_sum(tf.where(scalar, tf.constant(1, tf.int64), sizes))
    return scalar, error, has_look_back, reconstruction, new_state, upload


def paper_decision(g, grad_sum, slot_state, threshold, sizes):
    """The FedLUAR paper's LBGM solver (a009835 ``solvers/LBGM.py``) for one slot."""
    num_trainable = len(g)
    look_back = list(slot_state["look_back"])
    last_delta = list(slot_state["last_delta"])
    dot = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(grad_sum, look_back, strict=True)])
    a_sq = tf.add_n([tf.reduce_sum(tf.square(a)) for a in grad_sum])
    lb_sq = tf.add_n([tf.reduce_sum(tf.square(b)) for b in look_back])
    rho, error = projection(dot, a_sq, lb_sq)
    # A slot decides from its second round on (the solver's round_id > 0), and a
    # scalar needs a full send to scale (every slot sends in full in its first round).
    ready = slot_state["has_look_back"] & slot_state["has_last_delta"]
    decided = ready & (error <= threshold) & tf.math.is_finite(error)
    reconstruction = [tf.where(decided, rho * d, gi) for d, gi in zip(last_delta, g, strict=True)]
    new_state = collections.OrderedDict(
        look_back=list(grad_sum),  # overwritten every round
        last_delta=[tf.where(decided, d, gi) for d, gi in zip(last_delta, g, strict=True)],
        has_look_back=tf.constant(True),
        has_last_delta=tf.constant(True),
    )
    upload = tf.where(decided, tf.constant(num_trainable, tf.int64), tf.reduce_sum(sizes))
    scalar = tf.fill([num_trainable], decided)
    return (
        scalar,
        tf.fill([num_trainable], error),
        tf.fill([num_trainable], ready),
        reconstruction,
        new_state,
        upload,
    )


def projection(dot: tf.Tensor, g_sq: tf.Tensor, lb_sq: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """LBGM's multiplier ρ and projection error from <g, g_lb>, ||g||² and ||g_lb||².

    The error 1 − cos² is computed as ``1 − (dot/||g||²)·(dot/||g_lb||²)``
    (clipped to [0, 1]), which is exactly 0 when g is g_lb times a power of
    two and cannot overflow. Zero norms: g = 0 gives ρ = 0 and error 0 (g is
    exactly 0·g_lb); g ≠ 0 with g_lb = 0 gives ρ = 0 and error 1. A
    non-finite ||g||² gives error NaN.

    Args:
      dot: <g, g_lb>, any shape (elementwise).
      g_sq: ||g||², the same shape.
      lb_sq: ||g_lb||², the same shape.

    Returns:
      ``(rho, error)``, tensors of the same shape.
    """
    g_zero = tf.equal(g_sq, 0.0)
    lb_zero = tf.equal(lb_sq, 0.0)
    safe_g = tf.where(g_zero, tf.ones_like(g_sq), g_sq)
    safe_lb = tf.where(lb_zero, tf.ones_like(lb_sq), lb_sq)
    cos_sq = (dot / safe_g) * (dot / safe_lb)
    # Clipping absorbs rounding (cos² a hair above 1); it must not turn NaN into a number.
    clipped = tf.where(tf.math.is_finite(cos_sq), tf.clip_by_value(1.0 - cos_sq, 0.0, 1.0), cos_sq)
    error = tf.where(
        g_zero, tf.zeros_like(cos_sq), tf.where(lb_zero, tf.ones_like(cos_sq), clipped)
    )
    # A non-finite update has no meaningful error: NaN, which never passes the threshold.
    error = tf.where(
        tf.math.is_finite(g_sq), error, tf.fill(tf.shape(error), tf.constant(np.nan, error.dtype))
    )
    rho = tf.where(g_zero | lb_zero, tf.zeros_like(dot), dot / safe_lb)
    return rho, error


def client_report(decision, g, client_state, weight, trained):
    """A client's weighted reconstruction, new state and statistics for the server's sums.

    A client whose update or reconstruction is not finite is dropped: weight 0,
    zeros, and its previous state kept. The statistics are summed over clients
    (upload, decisions, errors, and with BatchNorm the weighted moving
    statistics, whose weighted mean becomes the global model's).
    """
    scalar, error, counted, reconstruction, new_state, upload = decision
    finite = tf.logical_and(all_finite(g), all_finite(reconstruction))
    weight = tf.where(finite, weight, 0.0)
    # Multiplying by the weight alone would leave 0 * NaN = NaN in the sum.
    weighted = [tf.where(finite, weight * r, tf.zeros_like(r)) for r in reconstruction]
    new_state = tf.nest.map_structure(
        lambda new, old: tf.where(finite, new, old), new_state, client_state
    )
    counted = counted & finite
    stats = collections.OrderedDict(
        weight=weight,
        upload_params=upload,
        aggregated=tf.cast(tf.logical_not(scalar) & finite, tf.float32),
        num_scalar=tf.reduce_sum(tf.cast(scalar, tf.float32)),
        error_sum=tf.reduce_sum(tf.where(counted, error, 0.0)),
        error_count=tf.reduce_sum(tf.cast(counted, tf.float32)),
        dropped=tf.cast(tf.logical_not(finite), tf.int32),
        participants=tf.constant(1, tf.int32),
    )
    if trained.non_trainable:  # BatchNorm statistics: their weighted mean becomes global
        kept = tf.logical_and(finite, all_finite(trained.non_trainable))
        stats["statistics"] = [
            tf.where(kept, weight * s, tf.zeros_like(s)) for s in trained.non_trainable
        ]
        stats["statistics_weight"] = tf.where(kept, weight, 0.0)
    return weighted, new_state, stats


def _invalid(name: str, expected: str, value) -> ValueError:
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. Received: {name}={value!r}"
    )


def check_configuration(arguments: dict) -> tuple[float, str]:
    """Checks `keras_luar.algorithms.build_lbgm`'s arguments before anything is traced; returns the threshold and weighting."""
    model_fn, variant, threshold = (
        arguments["model_fn"],
        arguments["variant"],
        arguments["threshold"],
    )
    local_steps, seed = arguments["local_steps"], arguments["seed"]
    error_feedback, server_momentum = arguments["error_feedback"], arguments["server_momentum"]
    client_weighting, server_optimizer = (
        arguments["client_weighting"],
        arguments["server_optimizer"],
    )
    client_optimizer = arguments["client_optimizer"]
    if not callable(model_fn):
        raise TypeError(
            "Invalid value for argument `model_fn`. Expected a callable returning a "
            f"tff.learning.models.VariableModel. Received: model_fn={model_fn!r}"
        )
    for name, value, optional in (
        ("client_optimizer", client_optimizer, False),
        ("server_optimizer", server_optimizer, True),
    ):
        if value is None and optional:
            continue
        if not isinstance(value, tff.learning.optimizers.Optimizer):
            raise TypeError(
                f"Invalid value for argument `{name}`. Expected a "
                f"tff.learning.optimizers.Optimizer. Received: {name}={value!r}"
            )
    if variant not in DEFAULT_THRESHOLDS:
        raise _invalid("variant", "'official' or 'paper'", variant)
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS[variant]
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, numbers.Real)
        or not 0.0 <= float(threshold) <= 1.0
    ):
        raise _invalid("threshold", "a float in [0, 1]", threshold)
    if (
        isinstance(local_steps, bool)
        or not isinstance(local_steps, numbers.Integral)
        or local_steps < 1
    ):
        raise _invalid("local_steps", "an int >= 1", local_steps)
    if not isinstance(error_feedback, bool | np.bool_):
        raise _invalid("error_feedback", "a bool", error_feedback)
    if client_weighting is None:
        client_weighting = DEFAULT_WEIGHTINGS[variant]
    check_weighting("client_weighting", client_weighting)
    if (
        isinstance(server_momentum, bool)
        or not isinstance(server_momentum, numbers.Real)
        or not 0.0 <= float(server_momentum) < 1.0
    ):
        raise _invalid("server_momentum", "a float in [0, 1)", server_momentum)
    consistent(error_feedback, variant, server_momentum, server_optimizer is not None)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise _invalid("seed", "an int", seed)
    return float(threshold), client_weighting


def consistent(error_feedback, variant, server_momentum, server_optimizer_given: bool) -> None:
    """The rules across LBGM's options (checked by the trainer and by `build_lbgm`)."""
    if server_momentum and server_optimizer_given:
        raise _invalid(
            "server_momentum",
            "0 when a server_optimizer is given (put the momentum in the optimizer)",
            server_momentum,
        )
    if error_feedback and variant == "paper":
        raise _invalid(
            "error_feedback",
            "False with variant='paper' (the FedLUAR paper's LBGM has no error feedback)",
            error_feedback,
        )
