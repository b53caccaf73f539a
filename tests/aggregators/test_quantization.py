"""QuantizationFactory (FedPAQ) against a numpy reference of the quantizer, alone and under LUAR."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import keras_luar
from keras_luar.aggregators import QuantizationFactory, QuantizationState
from keras_luar.aggregators.quantization import quantize, quantize_update, update_fingerprint

SHAPES = [(3, 2), (2,), (2, 2), (2, 3), (3,)]  # LUAR candidates: 0, 2, 3
CANDIDATE_INDICES = [0, 2, 3]
VALUE_TYPE = tff.types.to_type([(np.float32, s) for s in SHAPES])
WEIGHT_TYPE = tff.TensorType(np.float32)
# Encoded bytes of SHAPES, by hand: s = 4 needs 3 level bits + 1 sign bit = 4 bits per
# coordinate, s = 8 needs 4 + 1 = 5; packed bits rounded up to bytes, plus a 4-byte norm.
BYTES_S4 = [3 + 4, 1 + 4, 2 + 4, 3 + 4, 2 + 4]  # 24, 8, 16, 24, 12 bits
BYTES_S8 = [4 + 4, 2 + 4, 3 + 4, 4 + 4, 2 + 4]  # 30, 10, 20, 30, 15 bits


# ---- numpy reference ---------------------------------------------------------------------


def np_quantize(v, levels, u):
    """Reference Q(v) given the uniforms u; returns (Q(v), ξ)."""
    v = np.asarray(v, np.float32)
    norm = np.float32(np.sqrt(np.sum(v.astype(np.float64) ** 2)))
    if norm == 0:
        return np.zeros_like(v), np.zeros(v.shape, np.int64)
    r = np.minimum(np.abs(v) / norm * np.float32(levels), np.float32(levels))
    low = np.floor(r)
    xi = low + (u < r - low)
    return (norm * np.sign(v) * xi / np.float32(levels)).astype(np.float32), xi.astype(np.int64)


def np_fingerprint(values):
    return sum(int(np.asarray(v, np.float32).view(np.int32).astype(np.int64).sum()) for v in values)


def tensor_seeds(seed, round_num, values):
    """The per-tensor seeds the module docstring documents, derived independently."""
    fold_in = tf.random.experimental.stateless_fold_in
    key = tf.constant([seed, round_num], tf.int64)
    client = fold_in(key, tf.constant(np_fingerprint(values), tf.int64))
    return [fold_in(client, tf.constant(i, tf.int64)) for i in range(len(values))]


def np_quantize_update(values, levels, seed, round_num):
    seeds = tensor_seeds(seed, round_num, values)
    out = []
    for v, s in zip(values, seeds, strict=True):
        u = tf.random.stateless_uniform(np.shape(v), seed=s, dtype=tf.float32).numpy()
        out.append(np_quantize(v, levels, u)[0])
    return out


def weighted_mean(clients, weights):
    w = np.asarray(weights, np.float64)
    return [
        (sum(wi * c[i].astype(np.float64) for wi, c in zip(w, clients, strict=True)) / w.sum())
        for i in range(len(clients[0]))
    ]


def _clients(rng, n=3):
    return [[rng.normal(size=s).astype(np.float32) for s in SHAPES] for _ in range(n)]


def _assert_close(got, want):
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-6)


# ---- the quantizer -----------------------------------------------------------------------


@pytest.mark.parametrize("levels", [1, 4, 16])
def test_quantize_takes_grid_values_and_matches_reference(levels):
    rng = np.random.default_rng(levels)
    for trial in range(3):
        v = rng.normal(size=(4, 5)).astype(np.float32)
        v[0, 0] = 0.0
        seed = tf.constant([trial, levels], tf.int64)
        q = quantize(tf.constant(v), levels, seed).numpy()
        assert q.dtype == np.float32 and q.shape == v.shape
        norm = np.linalg.norm(v.astype(np.float64))
        k = q.astype(np.float64) * levels / norm * np.sign(v)
        xi = np.round(k)
        np.testing.assert_allclose(k, xi, atol=1e-5)  # on the grid ||v||·k/s·sign(v_j)
        assert np.all(xi >= 0) and np.all(xi <= levels)
        r = np.abs(v.astype(np.float64)) / norm * levels
        assert np.all((xi == np.floor(r)) | (xi == np.floor(r) + 1))
        assert q[0, 0] == 0.0
        u = tf.random.stateless_uniform(v.shape, seed=seed, dtype=tf.float32).numpy()
        ref, ref_xi = np_quantize(v, levels, u)
        np.testing.assert_array_equal(xi, ref_xi)
        np.testing.assert_allclose(q, ref, rtol=1e-6)


def test_quantize_error_bound_and_large_levels():
    v = np.random.default_rng(0).normal(size=50).astype(np.float32)
    norm = np.linalg.norm(v)
    for levels in [4, 2**20]:
        q = quantize(tf.constant(v), levels, tf.constant([1, 2], tf.int64)).numpy()
        # |Q(v)_j - v_j| <= ||v|| / s: ξ is floor(r) or floor(r) + 1.
        assert np.max(np.abs(q - v)) <= norm / levels * (1 + 1e-5)
    np.testing.assert_allclose(q, v, atol=1e-5)


def test_zero_tensor_and_dtypes():
    seed = tf.constant([0, 0], tf.int64)
    np.testing.assert_array_equal(quantize(tf.zeros([3, 2]), 8, seed), np.zeros([3, 2]))
    for dtype in [tf.float16, tf.float64]:
        v = tf.constant([[0.6, -0.8]], dtype)
        q = quantize(v, 5, seed)  # r = [3, 4] exactly: the output is v itself
        assert q.dtype == dtype
        np.testing.assert_allclose(q.numpy(), [[0.6, -0.8]], rtol=1e-3)


def test_update_fingerprint_is_the_bit_sum():
    values = [np.array([1.0, -2.5], np.float32), np.array([[3.25]], np.float32)]
    expected = (0x3F800000 - (2**32 - 0xC0200000)) + 0x40500000  # bits of 1.0, -2.5, 3.25
    assert np_fingerprint(values) == expected
    assert int(update_fingerprint([tf.constant(v) for v in values])) == expected


def test_quantize_update_uses_documented_seeds():
    rng = np.random.default_rng(1)
    values = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    got = quantize_update([tf.constant(v) for v in values], 4, tf.constant([9, 2], tf.int64))
    _assert_close(got, np_quantize_update(values, 4, 9, 2))


# ---- unbiasedness ------------------------------------------------------------------------

LEVELS = 4
NUM_DRAWS = 3000


def _passes_unbiasedness_check(draws, v, levels):
    """Is the mean of the draws within 5 standard errors of v in every coordinate?

    Var(Q(v)_j) = (||v||/s)^2 · p_j(1 - p_j) with p_j = r_j - floor(r_j).
    """
    norm = np.linalg.norm(v.astype(np.float64))
    r = np.abs(v) / norm * levels
    p = r - np.floor(r)
    stderr = norm / levels * np.sqrt(p * (1 - p) / len(draws))
    error = np.abs(np.mean(np.asarray(draws, np.float64), axis=0) - v)
    return bool(np.all(error <= 5 * stderr + 1e-6 * norm))


@pytest.fixture(scope="module")
def fixed_vector():
    return np.random.default_rng(11).normal(size=16).astype(np.float32)


def test_quantize_is_unbiased(fixed_vector):
    v = tf.constant(fixed_vector)
    draw = tf.function(lambda seed: quantize(v, LEVELS, seed))
    draws = [draw(tf.constant([5, i], tf.int64)).numpy() for i in range(NUM_DRAWS)]
    assert _passes_unbiasedness_check(draws, fixed_vector, LEVELS)
    # The draws are not all the same: the seed reaches the quantizer.
    assert len({d.tobytes() for d in draws[:50]}) > 1


def test_unbiasedness_check_has_power(fixed_vector):
    v = fixed_vector
    rng = np.random.default_rng(0)
    uniforms = rng.uniform(size=(NUM_DRAWS, v.size)).astype(np.float32)
    norm = np.float32(np.linalg.norm(v))
    r = np.abs(v) / norm * LEVELS
    low = np.floor(r)

    def biased(xi):
        return norm * np.sign(v) * xi / LEVELS

    # The reference quantizer with independent uniforms passes...
    assert _passes_unbiasedness_check([np_quantize(v, LEVELS, u)[0] for u in uniforms], v, LEVELS)
    # ...and biased ones fail: always floor, round to nearest, round up with p².
    assert not _passes_unbiasedness_check([biased(low)] * NUM_DRAWS, v, LEVELS)
    assert not _passes_unbiasedness_check([biased(np.round(r))] * NUM_DRAWS, v, LEVELS)
    squared = [biased(low + (u < (r - low) ** 2)) for u in uniforms]
    assert not _passes_unbiasedness_check(squared, v, LEVELS)


# ---- the aggregation process -------------------------------------------------------------


def test_create_types_and_measurements():
    process = QuantizationFactory(8).create(VALUE_TYPE, WEIGHT_TYPE)
    state_type = process.initialize.type_signature.result.member
    assert state_type.python_container is QuantizationState
    assert process.next.type_signature.result.result.member == VALUE_TYPE
    state = process.initialize()
    assert state.round_num == 0 and state.seed == 0
    out = process.next(state, _clients(np.random.default_rng(0)), [1.0, 1.0, 1.0])
    assert list(out.measurements) == ["quantization", "inner"]
    assert dict(out.measurements["quantization"]) == {
        "levels": 8,
        "bits_per_coordinate": 5,
        "requantized": False,
    }


def test_process_matches_reference_over_rounds():
    seed, levels, weights = 13, 4, [2.0, 0.0, 1.0]
    process = QuantizationFactory(levels, seed=seed).create(VALUE_TYPE, WEIGHT_TYPE)
    state = process.initialize()
    rng = np.random.default_rng(3)
    rounds = [_clients(rng), _clients(rng)]
    rounds.append(rounds[1])  # the same updates again: only the round changes the seed
    results = []
    for t, clients in enumerate(rounds):
        out = process.next(state, clients, weights)
        quantized = [np_quantize_update(c, levels, seed, t) for c in clients]
        expected = weighted_mean(quantized, weights)
        _assert_close(out.result, expected)
        # Quantization changes the mean, so the check above tells the two apart.
        assert not np.allclose(out.result[0], weighted_mean(clients, weights)[0], atol=1e-3)
        assert out.state.round_num == t + 1 and out.state.seed == seed
        results.append(out.result)
        state = out.state
    assert not np.array_equal(results[1][0], results[2][0])


def test_same_seed_same_run_and_seed_is_used():
    rng = np.random.default_rng(4)
    rounds = [_clients(rng) for _ in range(2)]

    def run(seed):
        process = QuantizationFactory(4, seed=seed).create(VALUE_TYPE, WEIGHT_TYPE)
        state, out = process.initialize(), []
        for clients in rounds:
            step = process.next(state, clients, [1.0, 1.0, 1.0])
            state = step.state
            out.append(np.concatenate([np.ravel(x) for x in step.result]))
        return np.concatenate(out)

    first = run(1)
    np.testing.assert_array_equal(first, run(1))
    assert not np.array_equal(first, run(2))


# ---- composition with LuarFactory --------------------------------------------------------


def _with_norms(state):
    return state._replace(weight_norms=np.ones(len(CANDIDATE_INDICES), np.float32))


def test_encoded_bytes_by_hand():
    for levels, per_tensor in [(4, BYTES_S4), (8, BYTES_S8)]:
        factory = QuantizationFactory(levels)
        assert [factory.encoded_bytes(s, np.float32) for s in SHAPES] == per_tensor
    # Bits per coordinate: ceil(log2(s + 1)) + 1.
    for levels, bits in [(1, 2), (2, 3), (3, 3), (7, 4), (15, 5), (16, 6), (255, 9)]:
        assert QuantizationFactory(levels).bits_per_coordinate == bits
    assert QuantizationFactory(16).encoded_bytes((100, 10), tf.float64) == 750 + 4


def test_luar_on_quantization_recycles_the_quantized_aggregate():
    seed, levels = 3, 4
    inner = QuantizationFactory(levels, seed=seed)
    process = keras_luar.LuarFactory(1, seed=0, inner_factory=inner).create(VALUE_TYPE, WEIGHT_TYPE)
    state = process.initialize()
    rng = np.random.default_rng(5)
    recycled_rounds = 0
    for t in range(4):
        clients = _clients(rng)
        mask = np.asarray(state.recycle_mask)
        out = process.next(_with_norms(state), clients, [1.0, 2.0, 1.0])
        # Reference: recycled candidates are zero-filled before quantization; LuarFactory's
        # default uniform weighting averages the quantized uploads with equal weights.
        uploads = [[c[i].copy() for i in range(len(SHAPES))] for c in clients]
        for j, i in enumerate(CANDIDATE_INDICES):
            if mask[j]:
                for u in uploads:
                    u[i][...] = 0.0
        quantized = [np_quantize_update(u, levels, seed, t) for u in uploads]
        expected = weighted_mean(quantized, [1.0, 1.0, 1.0])
        sent = [i for i in range(len(SHAPES)) if i not in CANDIDATE_INDICES] + [
            i for j, i in enumerate(CANDIDATE_INDICES) if not mask[j]
        ]
        _assert_close([out.result[i] for i in sent], [expected[i] for i in sent])
        for j, i in enumerate(CANDIDATE_INDICES):
            if mask[j]:
                np.testing.assert_array_equal(out.result[i], state.last_updates[j])
            np.testing.assert_array_equal(out.state.last_updates[j], out.result[i])
        luar = out.measurements["luar"]
        per_client = sum(BYTES_S4[i] for i in sent)
        assert luar["upload_bytes_per_client"] == per_client
        assert luar["upload_bytes"] == 3 * per_client
        assert luar["upload_params_per_client"] == sum(int(np.prod(SHAPES[i])) for i in sent)
        assert out.measurements["inner"]["quantization"]["levels"] == levels
        assert out.state.inner.round_num == t + 1
        recycled_rounds += int(mask.sum())
        state = out.state
    assert recycled_rounds == 3  # every round after the first recycles δ = 1 layer


def np_requantize(values, levels, seed, round_num):
    """The server's re-quantization, derived independently: the round key folded with -1."""
    fold_in = tf.random.experimental.stateless_fold_in
    key = fold_in(tf.constant([seed, round_num], tf.int64), tf.constant(-1, tf.int64))
    client = fold_in(key, tf.constant(np_fingerprint(values), tf.int64))
    out = []
    for i, v in enumerate(values):
        seed_i = fold_in(client, tf.constant(i, tf.int64))
        u = tf.random.stateless_uniform(np.shape(v), seed=seed_i, dtype=tf.float32).numpy()
        out.append(np_quantize(v, levels, u)[0])
    return out


def test_requantize_quantizes_the_aggregate_again():
    levels, seed = 4, 9
    plain = QuantizationFactory(levels, seed=seed).create(VALUE_TYPE, WEIGHT_TYPE)
    again = QuantizationFactory(levels, seed=seed, requantize=True).create(VALUE_TYPE, WEIGHT_TYPE)
    assert not QuantizationFactory(levels).requantize
    plain_state, again_state = plain.initialize(), again.initialize()
    rng = np.random.default_rng(11)
    for t in range(2):
        clients, weights = _clients(rng), [1.0, 3.0, 2.0]
        mean = plain.next(plain_state, clients, weights)
        out = again.next(again_state, clients, weights)
        assert out.measurements["quantization"]["requantized"]
        want = np_requantize([np.asarray(m) for m in mean.result], levels, seed, t)
        for got, expected, m in zip(out.result, want, mean.result, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
            # On the grid of the aggregate's own norm: ||m||·k/s for integers 0 <= k <= s.
            steps = np.abs(got) / (np.linalg.norm(m) / levels)
            np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
        plain_state, again_state = mean.state, out.state


def test_bad_requantize():
    with pytest.raises(TypeError, match="`requantize`"):
        QuantizationFactory(4, requantize="yes")


def test_luar_delta_zero_equals_quantization_alone():
    luar = keras_luar.LuarFactory(
        0, client_weighting="example", inner_factory=QuantizationFactory(8, seed=5)
    ).create(VALUE_TYPE, WEIGHT_TYPE)
    alone = QuantizationFactory(8, seed=5).create(VALUE_TYPE, WEIGHT_TYPE)
    luar_state, alone_state = luar.initialize(), alone.initialize()
    rng = np.random.default_rng(6)
    for _ in range(3):
        clients, weights = _clients(rng), [2.0, 5.0, 1.0]
        luar_out = luar.next(_with_norms(luar_state), clients, weights)
        alone_out = alone.next(alone_state, clients, weights)
        for a, b in zip(luar_out.result, alone_out.result, strict=True):
            np.testing.assert_array_equal(a, b)
        assert luar_out.measurements["luar"]["upload_bytes"] == 3 * sum(BYTES_S8)
        assert luar_out.measurements["luar"]["upload_params"] == 3 * 21
        luar_state, alone_state = luar_out.state, alone_out.state


# ---- configuration errors ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1])
def test_levels_below_one(bad):
    with pytest.raises(ValueError, match=rf"`levels`.*Received: levels={bad}"):
        QuantizationFactory(bad)


@pytest.mark.parametrize("bad", [2.5, True, "4", None])
def test_levels_not_int(bad):
    with pytest.raises(TypeError, match="`levels`"):
        QuantizationFactory(bad)


@pytest.mark.parametrize("bad", [True, 1.0, 2**63])
def test_bad_seed(bad):
    with pytest.raises((TypeError, ValueError), match="`seed`"):
        QuantizationFactory(4, seed=bad)


def test_unweighted_inner_factory_is_rejected():
    with pytest.raises(TypeError, match="inner_factory"):
        QuantizationFactory(4, inner_factory=tff.aggregators.SumFactory())


def test_integer_value_type_is_rejected():
    with pytest.raises(TypeError, match="structure of float"):
        QuantizationFactory(4).create(tff.types.to_type([(np.int32, (3, 3))]), WEIGHT_TYPE)


def test_integer_weight_type_is_rejected():
    with pytest.raises(TypeError, match="weight_type"):
        QuantizationFactory(4).create(VALUE_TYPE, tff.TensorType(np.int32))


def test_encoded_bytes_rejects_non_float_dtype():
    with pytest.raises(TypeError, match="dtype"):
        QuantizationFactory(4).encoded_bytes((3, 3), np.int32)
