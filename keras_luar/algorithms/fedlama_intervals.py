"""FedLAMA's interval rule (which kernels are averaged every φ rounds) and its server-step check.

See `keras_luar.algorithms.fedlama` for the method; `adjusted_intervals` is the
official ``update_intervals`` loop written in TensorFlow.

**Interval adjustment.** Rounds 0 … ``fedavg_rounds`` − 1 are plain FedAvg
(all intervals 1; the official warm-up is 8 rounds). At the end of every
period that ends in round ``fedavg_rounds`` − 1 or later, all intervals are
reset to 1 and the candidates (trainable variables of rank ≥ 2, see
`keras_luar.layers`) are sorted by d_v ascending. Walking that order, the
server accumulates δ_l = Σ d_v·numel(v) / Σ_{all trainable v} d_v·numel(v)
and λ_l = Σ numel(v) / (total candidate parameters), adding kernels until
1 − λ_l < δ_l; every kernel added, including the one that met the test, gets
interval φ. The first kernel in the order is therefore always relaxed. Ties
are broken by variable order (a stable sort); when all discrepancies are 0
no δ_l exceeds 0 and every kernel gets φ (the official code divides 0 by 0
and ends in the same place through NaN comparisons).

Details taken from the official code (swblaster/FedLAMA, ``solvers/fedlama.py``):
the unweighted mean over clients, the discrepancy formula with its I_v·τ·numel
normalization and the δ denominator over all trainable variables (biases
included), the loop that keeps the kernel that met the test, and the reset of
all intervals before each adjustment. Differences: the official code finds
kernels by the Keras name ``kernel`` (here: rank ≥ 2, see `keras_luar.layers`), adjusts
from round 6 on (``epoch_id > 5``), which for φ = 7 means the end of round 6
rather than 13 (identical for every other φ with ``fedavg_rounds`` = 8), keeps
one momentum buffer per process slot across rounds (here the client
optimizer's state is fresh every round, as everywhere in keras_luar), and
seeds client sampling from the clock.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar.algorithms.local_training import optimizer_hparams


def adjusted_intervals(
    discrepancy: tf.Tensor,
    sizes: np.ndarray,
    candidate_indices: tuple[int, ...],
    aggregation_interval: int,
) -> tf.Tensor:
    """FedLAMA's interval rule: which kernels are averaged every φ rounds.

    Args:
      discrepancy: float [n], d_v of every trainable variable.
      sizes: int [n], numel(v) of every trainable variable.
      candidate_indices: Positions of the candidates (rank ≥ 2) among the
        trainable variables.
      aggregation_interval: φ.

    Returns:
      int32 [n]: φ for the kernels collected by the rule, 1 elsewhere.

    Examples:
      The 8-parameter kernel has the lowest discrepancy and already carries
      0.8/1.8 of the discrepancy mass, more than the 0.2 of kernel parameters
      left after it, so it alone gets φ:

      >>> import numpy as np, tensorflow as tf
      >>> d = tf.constant([0.1, 0.1, 0.3, 0.1])
      >>> adjusted_intervals(d, np.array([8, 2, 2, 2]), (0, 2), 2).numpy()
      array([2, 1, 1, 1], dtype=int32)
    """
    n = len(sizes)
    ones = tf.ones([n], tf.int32)
    if not candidate_indices:
        return ones
    cand = tf.constant(candidate_indices, tf.int32)
    d = tf.cast(discrepancy, tf.float64)
    mass = d * tf.constant(sizes, tf.float64)  # d_v·numel(v): official `param_dists`
    total_mass = tf.reduce_sum(mass)
    cand_sizes = [float(sizes[i]) for i in candidate_indices]
    order = tf.argsort(tf.gather(d, cand), stable=True)  # ascending discrepancy
    delta = tf.math.divide_no_nan(tf.cumsum(tf.gather(tf.gather(mass, cand), order)), total_mass)
    lam = tf.cumsum(tf.gather(tf.constant(cand_sizes, tf.float64), order)) / sum(cand_sizes)
    met = (1.0 - lam) < delta
    num_cand = len(candidate_indices)
    # Kernels are collected up to and including the first that meets the test (all if none).
    first = tf.cast(tf.argmax(tf.cast(met, tf.int32)), tf.int32)
    count = tf.where(tf.reduce_any(met), first + 1, num_cand)
    collected_sorted = tf.cast(tf.range(num_cand) < count, tf.int32)
    collected = tf.scatter_nd(order[:, None], collected_sorted, [num_cand])
    cand_intervals = 1 + (aggregation_interval - 1) * collected
    return tf.tensor_scatter_nd_update(ones, cand[:, None], cand_intervals)


def _is_plain_step(optimizer: object) -> bool:
    """None, or SGD with learning rate 1 and no momentum: x ← x − (x − x̄) = x̄."""
    if optimizer is None:
        return True
    plain = tff.learning.optimizers.build_sgdm(1.0)
    if type(optimizer) is not type(plain):
        return False
    return dict(optimizer_hparams(optimizer)) == {"learning_rate": 1.0}
