"""FedLUAR's layer scores and the seeded choice of layers to recycle.

Pure TensorFlow functions over plain tensors, shared by every execution path.

For candidate layer l with aggregated update U_l and global weight x_l at the
start of the round, the score is (paper, Eq. 3; official code)

    s_l = ||U_l||_F / (||x_l||_F + 1e-6),

and the next round's recycle set is a draw of `k` layers without replacement
with probabilities p_l = (1/s_l) / sum_j (1/s_j). Layers that changed little
relative to their size are the likeliest to be recycled.

Sampling uses the Gumbel-top-k trick: with g_l i.i.d. standard Gumbel, the
indices of the k largest log p_l + g_l have exactly the distribution of k
successive weighted draws without replacement (numpy's
``choice(replace=False, p=p)``). The uniforms come from
`tf.random.stateless_uniform` keyed by (seed, round), so a run is reproducible
and resumable from its state alone.

Deviation from the official code: it computes 1/s_l directly and fails when
a score is 0. Here 1/s_l is taken as 1/max(s_l, `SCORE_FLOOR`): a layer whose
aggregated update is exactly zero is then the most likely to be recycled,
which is what its zero score means.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

WEIGHT_NORM_EPSILON = 1e-6
"""Added to ||x_l|| in the score's denominator, as in the official code."""

SCORE_FLOOR = 1e-12
"""Scores below this are raised to it before taking 1/s (see module docstring)."""


def frobenius_norms(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """Frobenius norm of each tensor, as a float32 vector.

    Args:
      tensors: Tensors of any shape.

    Returns:
      A float32 tensor of shape ``[len(tensors)]``.
    """
    if not tensors:
        return tf.zeros([0], tf.float32)
    return tf.stack([tf.norm(tf.cast(tf.reshape(t, [-1]), tf.float32)) for t in tensors])


def layer_scores(update_norms: tf.Tensor, weight_norms: tf.Tensor) -> tf.Tensor:
    """FedLUAR's gradient-to-weight score ``||U_l|| / (||x_l|| + 1e-6)``.

    Args:
      update_norms: float32 ``[L]``, norms of the aggregated updates.
      weight_norms: float32 ``[L]``, norms of the global weights at the start
        of the round.

    Returns:
      float32 ``[L]`` scores.
    """
    return update_norms / (weight_norms + WEIGHT_NORM_EPSILON)


def recycle_log_probabilities(scores: tf.Tensor, eligible: tf.Tensor | None = None) -> tf.Tensor:
    """Log of p_l = (1/s_l) / sum_j (1/s_j), over the eligible layers.

    Args:
      scores: float ``[L]`` non-negative scores.
      eligible: Optional bool ``[L]``; ineligible layers get probability 0
        (log-probability ``-inf``).

    Returns:
      float64 ``[L]`` log-probabilities (``-inf`` where ineligible).
    """
    s = tf.maximum(tf.cast(scores, tf.float64), SCORE_FLOOR)
    logits = -tf.math.log(s)
    if eligible is None:
        return logits - tf.reduce_logsumexp(logits)
    minus_inf = tf.constant(-float("inf"), tf.float64)
    logits = tf.where(eligible, logits, minus_inf)
    # Where nothing is eligible the normaliser is -inf; keep -inf rather than NaN.
    return tf.where(eligible, logits - tf.reduce_logsumexp(logits), minus_inf)


def recycle_probabilities(scores: tf.Tensor, eligible: tf.Tensor | None = None) -> tf.Tensor:
    """p_l = (1/s_l) / sum_j (1/s_j), as float64 ``[L]`` (0 where ineligible)."""
    return tf.exp(recycle_log_probabilities(scores, eligible))


def round_seed(seed: tf.Tensor, round_num: tf.Tensor) -> tf.Tensor:
    """The stateless RNG seed ``[seed, round]`` (int64 ``[2]``)."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(round_num, tf.int64)])


def sample_recycle_mask(
    scores: tf.Tensor,
    num_recycled: int,
    seed: tf.Tensor,
    eligible: tf.Tensor | None = None,
) -> tf.Tensor:
    """Draws `num_recycled` layers without replacement with p_l ∝ 1/s_l.

    Args:
      scores: float ``[L]`` layer scores.
      num_recycled: δ, a Python int with ``0 <= δ <= L``.
      seed: int64 ``[2]`` stateless seed, e.g. `round_seed(seed, round)`.
      eligible: Optional bool ``[L]``. Ineligible layers are never drawn; if
        fewer than δ layers are eligible, all eligible ones are drawn.

    Returns:
      bool ``[L]`` mask of the layers to recycle.
    """
    num_layers = scores.shape[0]
    if num_recycled == 0:
        return tf.zeros([num_layers], tf.bool)
    log_p = recycle_log_probabilities(scores, eligible)
    # Uniforms in (0, 1): the lower bound keeps -log(-log(u)) finite.
    u = tf.random.stateless_uniform(
        [num_layers], seed=seed, minval=1e-300, maxval=1.0, dtype=tf.float64
    )
    keys = log_p - tf.math.log(-tf.math.log(u))
    _, top = tf.math.top_k(keys, k=num_recycled)
    chosen = tf.scatter_nd(tf.expand_dims(top, 1), tf.ones([num_recycled], tf.bool), [num_layers])
    if eligible is not None:
        chosen = tf.logical_and(chosen, eligible)
    return chosen


def recycle_order(
    scores: tf.Tensor, seed: tf.Tensor, eligible: tf.Tensor | None = None
) -> tf.Tensor:
    """All layers in the Gumbel-top-k order of `sample_recycle_mask` (int32 ``[L]``).

    The first k entries are exactly the layers `sample_recycle_mask` draws for
    δ = k with the same seed, so every prefix of the order is a draw without
    replacement with p_l ∝ 1/s_l. Ineligible layers come last.
    """
    num_layers = scores.shape[0]
    log_p = recycle_log_probabilities(scores, eligible)
    u = tf.random.stateless_uniform(
        [num_layers], seed=seed, minval=1e-300, maxval=1.0, dtype=tf.float64
    )
    keys = log_p - tf.math.log(-tf.math.log(u))
    _, order = tf.math.top_k(keys, k=num_layers)
    return order


def budget_recycle_mask(
    scores: tf.Tensor,
    sizes: tf.Tensor,
    need: tf.Tensor,
    seed: tf.Tensor,
    eligible: tf.Tensor,
) -> tf.Tensor:
    """The shortest prefix of `recycle_order` whose sizes add up to at least `need`.

    The upload-budget extension of FedLUAR (not in the paper): the layers are
    still drawn with p_l ∝ 1/s_l without replacement, but how many are drawn
    follows the budget instead of a fixed δ. With ``need <= 0`` nothing is
    recycled; if all eligible layers together are smaller than `need`, all of
    them are.

    Args:
      scores: float ``[L]`` layer scores.
      sizes: float64 ``[L]``, what each layer costs to upload (bytes).
      need: float64 ``[]``, how much the coming round must leave at home.
      seed: int64 ``[2]`` stateless seed (as for `sample_recycle_mask`).
      eligible: bool ``[L]``; ineligible layers are never recycled.

    Returns:
      bool ``[L]`` mask of the layers to recycle.
    """
    num_layers = scores.shape[0]
    order = recycle_order(scores, seed, eligible)
    ordered = tf.gather(tf.where(eligible, tf.cast(sizes, tf.float64), 0.0), order)
    before = tf.cumsum(ordered, exclusive=True)
    take = tf.logical_and(before < tf.cast(need, tf.float64), tf.gather(eligible, order))
    mask = tf.scatter_nd(tf.expand_dims(order, 1), take, [num_layers])
    return tf.logical_and(mask, eligible)
