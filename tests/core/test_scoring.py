"""Tests for `keras_luar.scoring`: layer scores and the seeded recycle draw.

The sampler is checked against the exact distribution of successive weighted
sampling without replacement (numpy's ``choice(replace=False, p=p)``), which
the test derives on its own from p = (1/s) / sum(1/s).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from keras_luar import scoring

# ---------------------------------------------------------------------------
# Norms and scores.
# ---------------------------------------------------------------------------


def test_frobenius_norms_ranks_0_to_4():
    rng = np.random.default_rng(0)
    arrays = [
        np.float32(-3.0),
        rng.normal(size=[5]).astype(np.float32),
        rng.normal(size=[3, 4]).astype(np.float32),
        rng.normal(size=[2, 3, 4]).astype(np.float64),
        rng.normal(size=[3, 3, 2, 4]).astype(np.float16),
        np.zeros([2, 2], np.float32),
    ]
    got = scoring.frobenius_norms([tf.constant(a) for a in arrays])
    assert got.dtype == tf.float32
    assert got.shape == [len(arrays)]
    expected = [np.sqrt(np.sum(np.square(np.ravel(a).astype(np.float64)))) for a in arrays]
    assert expected[0] == 3.0 and expected[-1] == 0.0
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(
        got.numpy(), [np.linalg.norm(np.ravel(a)) for a in arrays], rtol=2e-3
    )


def test_frobenius_norms_empty():
    got = scoring.frobenius_norms([])
    assert got.shape == [0]
    assert got.dtype == tf.float32


def test_layer_scores_by_hand():
    rng = np.random.default_rng(1)
    updates = [rng.normal(size=s).astype(np.float32) * 0.01 for s in ([4, 3], [3, 3, 2, 5], [7])]
    weights = [rng.normal(size=u.shape).astype(np.float32) for u in updates]
    weights.append(np.zeros([2, 2], np.float32))  # ||x|| = 0: only the epsilon remains
    updates.append(np.full([2, 2], 0.5, np.float32))  # ||U|| = 1

    u_norms = scoring.frobenius_norms([tf.constant(u) for u in updates])
    w_norms = scoring.frobenius_norms([tf.constant(w) for w in weights])
    got = scoring.layer_scores(u_norms, w_norms).numpy()
    expected = [
        np.linalg.norm(u.ravel().astype(np.float64))
        / (np.linalg.norm(w.ravel().astype(np.float64)) + 1e-6)
        for u, w in zip(updates, weights, strict=True)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(got[-1], 1e6, rtol=1e-5)
    assert scoring.WEIGHT_NORM_EPSILON == 1e-6


# ---------------------------------------------------------------------------
# Probabilities.
# ---------------------------------------------------------------------------


def _p_by_hand(scores, eligible=None):
    s = np.maximum(np.asarray(scores, np.float64), scoring.SCORE_FLOOR)
    inv = 1.0 / s
    if eligible is not None:
        inv = np.where(eligible, inv, 0.0)
    total = inv.sum()
    return inv / total if total > 0 else np.zeros_like(inv)


def test_recycle_probabilities_by_hand():
    s = [0.1, 0.2, 0.5, 1.0, 3.0]
    got = scoring.recycle_probabilities(tf.constant(s, tf.float32)).numpy()
    inv = [10.0, 5.0, 2.0, 1.0, 1.0 / 3.0]
    expected = np.array(inv) / sum(inv)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-12)
    # Lower score -> more likely to be recycled.
    assert np.all(np.diff(got) < 0)
    log_p = scoring.recycle_log_probabilities(tf.constant(s, tf.float32)).numpy()
    assert log_p.dtype == np.float64
    np.testing.assert_allclose(np.exp(log_p), expected, rtol=1e-6)


def test_recycle_probabilities_zero_scores_are_finite():
    s = np.array([0.0, 0.5, 0.0, 2.0], np.float32)
    got = scoring.recycle_probabilities(tf.constant(s)).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, _p_by_hand(s), rtol=1e-9)
    # The two zero scores share (almost) all of the mass.
    np.testing.assert_allclose(got[[0, 2]], [0.5, 0.5], rtol=1e-9)
    assert got[1] > 0 and got[3] > 0
    all_zero = scoring.recycle_probabilities(tf.zeros([3])).numpy()
    np.testing.assert_allclose(all_zero, [1 / 3] * 3, rtol=1e-12)


def test_recycle_probabilities_eligible_mask():
    s = np.array([0.1, 0.2, 0.5, 1.0, 3.0], np.float32)
    eligible = np.array([True, False, True, True, False])
    got = scoring.recycle_probabilities(tf.constant(s), tf.constant(eligible)).numpy()
    assert got[1] == 0.0 and got[4] == 0.0
    inv = np.array([10.0, 2.0, 1.0])
    np.testing.assert_allclose(got[[0, 2, 3]], inv / inv.sum(), rtol=1e-6)
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-12)


def test_recycle_probabilities_nothing_eligible():
    s = tf.constant([0.1, 0.0, 1.0])
    got = scoring.recycle_probabilities(s, tf.constant([False, False, False])).numpy()
    assert np.all(got == 0.0)
    log_p = scoring.recycle_log_probabilities(s, tf.constant([False, False, False])).numpy()
    assert not np.any(np.isnan(log_p))
    assert np.all(np.isneginf(log_p))


# ---------------------------------------------------------------------------
# Seeds and the mask.
# ---------------------------------------------------------------------------


def test_round_seed():
    seed = scoring.round_seed(7, 3)
    assert seed.dtype == tf.int64
    assert seed.shape == [2]
    assert seed.numpy().tolist() == [7, 3]
    seed = scoring.round_seed(tf.constant(11, tf.int32), tf.constant(2**40, tf.int64))
    assert seed.dtype == tf.int64
    assert seed.numpy().tolist() == [11, 2**40]


SCORES = np.array([0.1, 0.2, 0.5, 1.0, 3.0, 0.7, 0.05], np.float32)


@pytest.mark.parametrize("k", [1, 2, 3, 6, 7])
def test_mask_has_exactly_k_entries(k):
    for r in range(20):
        mask = scoring.sample_recycle_mask(tf.constant(SCORES), k, scoring.round_seed(1, r))
        assert mask.dtype == tf.bool
        assert mask.shape == [len(SCORES)]
        assert int(tf.reduce_sum(tf.cast(mask, tf.int32))) == k


def test_mask_zero_recycled_is_all_false():
    mask = scoring.sample_recycle_mask(tf.constant(SCORES), 0, scoring.round_seed(1, 0))
    assert mask.dtype == tf.bool
    assert mask.numpy().tolist() == [False] * len(SCORES)


def test_mask_is_deterministic_and_depends_on_the_seed():
    def draw(seed, r):
        return tuple(
            scoring.sample_recycle_mask(tf.constant(SCORES), 3, scoring.round_seed(seed, r)).numpy()
        )

    assert draw(5, 2) == draw(5, 2)
    # Different rounds / run seeds give different draws (not all 30 equal).
    assert len({draw(5, r) for r in range(30)}) > 5
    assert len({draw(s, 2) for s in range(30)}) > 5


def test_mask_never_picks_ineligible():
    eligible = np.array([False, True, True, False, True, True, False])
    picked = np.zeros(len(SCORES), np.int64)
    for r in range(200):
        mask = scoring.sample_recycle_mask(
            tf.constant(SCORES), 2, scoring.round_seed(0, r), tf.constant(eligible)
        ).numpy()
        assert mask.sum() == 2
        assert not np.any(mask & ~eligible)
        picked += mask
    # Every eligible layer gets picked at some point.
    assert np.all(picked[eligible] > 0)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_mask_with_fewer_eligible_than_k_picks_all_eligible(k):
    # Layer 0 has the lowest-but-one score and is ineligible; zero scores too.
    scores = np.array([0.01, 0.0, 3.0, 0.0, 1.0, 2.0, 0.5], np.float32)
    eligible = np.array([False, True, False, False, True, False, False])
    for r in range(10):
        mask = scoring.sample_recycle_mask(
            tf.constant(scores), k, scoring.round_seed(3, r), tf.constant(eligible)
        ).numpy()
        assert mask.tolist() == eligible.tolist()
    nothing = scoring.sample_recycle_mask(
        tf.constant(scores), k, scoring.round_seed(3, 0), tf.zeros([7], tf.bool)
    ).numpy()
    assert not nothing.any()


def test_mask_inside_tf_function():
    fn = tf.function(lambda s, r: scoring.sample_recycle_mask(s, 2, scoring.round_seed(9, r)))
    for r in range(5):
        eager = scoring.sample_recycle_mask(tf.constant(SCORES), 2, scoring.round_seed(9, r))
        assert fn(tf.constant(SCORES), tf.constant(r, tf.int64)).numpy().tolist() == (
            eager.numpy().tolist()
        )


# ---------------------------------------------------------------------------
# The distribution of the draw.
# ---------------------------------------------------------------------------

STAT_SCORES = np.array([0.1, 0.2, 0.5, 1.0, 3.0])
DELTA = 2
NUM_DRAWS = 40_000
PAIRS = list(itertools.combinations(range(len(STAT_SCORES)), 2))
SIGMAS = 5.0


def _p_exact(scores):
    inv = 1.0 / np.asarray(scores, np.float64)
    return inv / inv.sum()


def _pair_probs_without_replacement(p):
    """P({i, j}) for two successive weighted draws without replacement."""
    return np.array([p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j]) for i, j in PAIRS])


def _pair_probs_product(p):
    """A WRONG sampler: the pair {i, j} drawn with probability ∝ p_i p_j."""
    w = np.array([p[i] * p[j] for i, j in PAIRS])
    return w / w.sum()


def _pair_probs_by_enumeration(p):
    """Successive sampling, enumerated over ordered draws (cross-check)."""
    out = dict.fromkeys(PAIRS, 0.0)
    for i, j in itertools.permutations(range(len(p)), 2):
        out[tuple(sorted((i, j)))] += p[i] * (p[j] / (1 - p[i]))
    return np.array([out[pair] for pair in PAIRS])


@tf.function
def _draw_masks(scores, rounds):
    return tf.map_fn(
        lambda r: scoring.sample_recycle_mask(scores, DELTA, scoring.round_seed(0, r)),
        rounds,
        fn_output_signature=tf.bool,
        parallel_iterations=64,
    )


@tf.function
def _draw_masks_wrong(scores, rounds):
    """A plausible bug: Gumbel-top-k on p instead of log p."""

    def one(r):
        p = scoring.recycle_probabilities(scores)
        u = tf.random.stateless_uniform(
            p.shape, seed=scoring.round_seed(0, r), minval=1e-300, maxval=1.0, dtype=tf.float64
        )
        _, top = tf.math.top_k(p - tf.math.log(-tf.math.log(u)), k=DELTA)
        return tf.reduce_any(tf.one_hot(top, p.shape[0], on_value=True, off_value=False), 0)

    return tf.map_fn(one, rounds, fn_output_signature=tf.bool, parallel_iterations=64)


def _pair_counts(masks):
    masks = np.asarray(masks)
    assert masks.shape == (NUM_DRAWS, len(STAT_SCORES))
    assert np.all(masks.sum(axis=1) == DELTA)
    return np.array([np.sum(masks[:, i] & masks[:, j]) for i, j in PAIRS])


def _tolerance(probs):
    """SIGMAS binomial standard errors of each pair frequency."""
    return SIGMAS * np.sqrt(probs * (1 - probs) / NUM_DRAWS)


def _passes(counts, probs):
    """The check: every pair frequency within tolerance, and a chi-square fit."""
    freqs = counts / NUM_DRAWS
    within = np.all(np.abs(freqs - probs) <= _tolerance(probs))
    expected = probs * NUM_DRAWS
    chi2 = np.sum((counts - expected) ** 2 / expected)
    p_value = stats.chi2.sf(chi2, df=len(PAIRS) - 1)
    return bool(within and p_value > 1e-6), freqs, p_value


@pytest.fixture(scope="module")
def correct_masks():
    scores = tf.constant(STAT_SCORES, tf.float32)
    return _draw_masks(scores, tf.range(NUM_DRAWS, dtype=tf.int64)).numpy()


def test_exact_pair_probabilities_are_self_consistent():
    p = _p_exact(STAT_SCORES)
    exact = _pair_probs_without_replacement(p)
    np.testing.assert_allclose(exact, _pair_probs_by_enumeration(p), rtol=1e-12)
    np.testing.assert_allclose(exact.sum(), 1.0, rtol=1e-12)
    # And against numpy's own choice(replace=False, p), the reference sampler.
    rng = np.random.default_rng(0)
    draws = [frozenset(rng.choice(len(p), size=DELTA, replace=False, p=p)) for _ in range(20_000)]
    freqs = np.array([draws.count(frozenset(pair)) for pair in PAIRS]) / len(draws)
    assert np.all(np.abs(freqs - exact) <= SIGMAS * np.sqrt(exact * (1 - exact) / len(draws)))


def test_pair_frequencies_match_weighted_sampling_without_replacement(correct_masks):
    p = _p_exact(STAT_SCORES)
    np.testing.assert_allclose(
        scoring.recycle_probabilities(tf.constant(STAT_SCORES, tf.float32)).numpy(), p, rtol=1e-6
    )
    exact = _pair_probs_without_replacement(p)
    ok, freqs, p_value = _passes(_pair_counts(correct_masks), exact)
    assert ok, f"pairs {PAIRS}\nempirical {freqs}\nexact     {exact}\nchi2 p={p_value}"


def test_marginal_inclusion_frequencies(correct_masks):
    p = _p_exact(STAT_SCORES)
    exact = _pair_probs_without_replacement(p)
    inclusion = np.array(
        [
            sum(q for (i, j), q in zip(PAIRS, exact, strict=True) if layer in (i, j))
            for layer in range(len(p))
        ]
    )
    np.testing.assert_allclose(inclusion.sum(), DELTA)
    freqs = correct_masks.mean(axis=0)
    tol = SIGMAS * np.sqrt(inclusion * (1 - inclusion) / NUM_DRAWS)
    assert np.all(np.abs(freqs - inclusion) <= tol), (freqs, inclusion)
    # Inclusion is NOT proportional to p (a common misconception): here the
    # likeliest layer is included far less often than DELTA * p_0 > 1.
    assert DELTA * p[0] > 1.0 > inclusion[0]


def test_the_check_has_power_against_wrong_samplers(correct_masks):
    p = _p_exact(STAT_SCORES)
    exact = _pair_probs_without_replacement(p)
    tol = _tolerance(exact)

    # (a) Pairs drawn ∝ p_i p_j: its exact pair probabilities are far outside the
    # tolerance of the correct ones, so the check above would reject it.
    wrong = _pair_probs_product(p)
    np.testing.assert_allclose(wrong.sum(), 1.0)
    assert np.max(np.abs(wrong - exact) / tol) > 3.0  # about 18 sigma
    # Even a sampler matching `wrong` exactly (expected counts) fails the check.
    assert not _passes(wrong * NUM_DRAWS, exact)[0]
    # (b) Sampling ∝ s instead of ∝ 1/s.
    assert not _passes(
        _pair_probs_without_replacement(_p_exact(1 / STAT_SCORES)) * NUM_DRAWS, exact
    )[0]

    # (c) An actual buggy TF sampler (Gumbel noise added to p, not log p), with the
    # same seeds and number of draws, fails the same check.
    scores = tf.constant(STAT_SCORES, tf.float32)
    wrong_masks = _draw_masks_wrong(scores, tf.range(NUM_DRAWS, dtype=tf.int64)).numpy()
    ok, freqs, _ = _passes(_pair_counts(wrong_masks), exact)
    assert not ok, freqs
    # ... while the correct sampler's draws, compared with the wrong exact
    # distribution (a), fail too: the check discriminates in both directions.
    assert not _passes(_pair_counts(correct_masks), wrong)[0]


def test_pair_frequencies_with_an_ineligible_layer():
    scores = np.array([0.1, 0.2, 0.5, 1.0, 3.0])
    eligible = np.array([True, False, True, True, True])
    rounds = tf.range(NUM_DRAWS // 4, dtype=tf.int64)

    @tf.function
    def draw(rounds):
        return tf.map_fn(
            lambda r: scoring.sample_recycle_mask(
                tf.constant(scores, tf.float32),
                DELTA,
                scoring.round_seed(1, r),
                tf.constant(eligible),
            ),
            rounds,
            fn_output_signature=tf.bool,
            parallel_iterations=64,
        )

    masks = draw(rounds).numpy()
    assert not masks[:, 1].any()
    p = _p_by_hand(scores, eligible)
    n = len(masks)
    for i, j in PAIRS:
        exact = p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])
        freq = np.mean(masks[:, i] & masks[:, j])
        assert abs(freq - exact) <= SIGMAS * np.sqrt(exact * (1 - exact) / n) + 1e-12, (i, j)
