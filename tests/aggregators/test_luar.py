"""Execution tests of LuarFactory on 3 small clients against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_federated as tff
from luar_reference import check_mask_draw, initial_state, reference_round

import keras_luar
from keras_luar.aggregators.luar import LuarState

SHAPES = [(3, 2), (2,), (2, 2), (2, 3), (3,)]  # candidates: 0, 2, 3 -> L = 3
CANDIDATES = ["w1", "w2", "w3"]
NAMES = ["w1", "b1", "w2", "w3", "b3"]
VALUE_TYPE = tff.types.to_type([(np.float32, s) for s in SHAPES])
WEIGHT_TYPE = tff.TensorType(np.float32)


def _clients(rng, n=3, scale=None):
    scale = scale or [1.0] * len(SHAPES)
    return [
        [(rng.normal(size=s) * c).astype(np.float32) for s, c in zip(SHAPES, scale, strict=True)]
        for _ in range(n)
    ]


def _with_norms(state, norms):
    return state._replace(weight_norms=np.asarray(norms, np.float32))


def _assert_measurements(got, expected):
    for key, value in expected.items():
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(value), rtol=1e-6, err_msg=key)


def _assert_state(state, ref):
    np.testing.assert_array_equal(state.aggregation_counts, ref.counts)
    np.testing.assert_allclose(state.scores, ref.scores, rtol=1e-5, atol=1e-7)
    for got, want in zip(state.last_updates, ref.updates, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_create_types_and_names():
    factory = keras_luar.LuarFactory(1, variable_names=NAMES)
    process = factory.create(VALUE_TYPE, WEIGHT_TYPE)
    assert factory.candidate_names == tuple(CANDIDATES)
    state_type = process.initialize.type_signature.result.member
    assert state_type.python_container is LuarState
    assert [tuple(t.shape) for t in state_type.last_updates] == [(3, 2), (2, 2), (2, 3)]
    measurements = process.next.type_signature.result.measurements.member
    assert set(tff.structure.name_list(measurements)) == {"luar", "inner"}
    assert tff.structure.name_list(measurements.luar) == [
        "recycled",
        "num_recycled",
        "num_clients",
        "num_dropped_clients",
        "upload_params_per_client",
        "upload_params",
        "upload_bytes_per_client",
        "upload_bytes",
        "upload_fraction",
        "cumulative_upload_fraction",
        "scores",
        "aggregation_counts",
        "weight_norms_missing",
    ]


@pytest.mark.parametrize("uniform", [True, False])
def test_multi_round_matches_reference(uniform):
    delta = 1
    factory = keras_luar.LuarFactory(
        delta, seed=7, client_weighting="uniform" if uniform else "example"
    )
    process = factory.create(VALUE_TYPE, WEIGHT_TYPE)
    state = process.initialize()
    ref = initial_state(SHAPES)
    rng = np.random.default_rng(0)
    weights = [1.0, 3.0, 2.0]
    recycled_rounds = 0
    for t in range(6):
        clients = _clients(rng)
        norms = rng.uniform(0.5, 2.0, size=3)
        np.testing.assert_array_equal(state.recycle_mask, ref.mask)
        out = process.next(_with_norms(state, norms), clients, weights)
        result, ref, expected = reference_round(ref, clients, weights, norms, uniform=uniform)
        for got, want in zip(out.result, result, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        _assert_state(out.state, ref)
        _assert_measurements(out.measurements["luar"], expected)
        np.testing.assert_allclose(out.measurements["luar"]["scores"], ref.scores, rtol=1e-5)
        if t == 0:
            assert not np.any(out.measurements["luar"]["recycled"]), "round 0 sends everything"
        recycled_rounds += int(expected["num_recycled"])
        state = out.state
        check_mask_draw(np.asarray(state.recycle_mask), delta, ref.counts)
        ref.mask = np.asarray(state.recycle_mask)
        assert state.round_num == t + 1
    assert recycled_rounds == 5  # every round after the first recycles δ = 1 layer


def test_recycled_layer_gets_exactly_its_stored_update_and_stale_score():
    # w2's update is ~1e-6 of the others relative to equal weight norms: its score is
    # tiny, so p(w2) = 1 - O(1e-6) and it is recycled in every round after the first.
    process = keras_luar.LuarFactory(1, seed=0).create(VALUE_TYPE, WEIGHT_TYPE)
    state = process.initialize()
    rng = np.random.default_rng(1)
    norms = np.ones(3)
    first = process.next(
        _with_norms(state, norms), _clients(rng, scale=[1, 1, 1e-6, 1, 1]), [1.0] * 3
    )
    stored = np.array(first.state.last_updates[1])
    stale_score = float(first.state.scores[1])
    state = first.state
    for _ in range(4):
        np.testing.assert_array_equal(state.recycle_mask, [False, True, False])
        # The clients now send large w2 updates; none of it may be used.
        out = process.next(
            _with_norms(state, norms), _clients(rng, scale=[1, 1, 100, 1, 1]), [1.0] * 3
        )
        np.testing.assert_array_equal(out.result[2], stored)
        np.testing.assert_array_equal(out.state.last_updates[1], stored)
        assert float(out.state.scores[1]) == stale_score
        assert out.measurements["luar"]["upload_params_per_client"] == 6 + 2 + 6 + 3
        state = out.state
    np.testing.assert_array_equal(state.aggregation_counts, [5, 1, 5])


def test_delta_zero_equals_mean_factory_exactly():
    luar = keras_luar.LuarFactory(0, client_weighting="example").create(VALUE_TYPE, WEIGHT_TYPE)
    mean = tff.aggregators.MeanFactory().create(VALUE_TYPE, WEIGHT_TYPE)
    luar_state, mean_state = luar.initialize(), mean.initialize()
    rng = np.random.default_rng(2)
    for _ in range(3):
        clients, weights = _clients(rng), [2.0, 5.0, 1.0]
        luar_out = luar.next(_with_norms(luar_state, np.ones(3)), clients, weights)
        mean_out = mean.next(mean_state, clients, weights)
        for a, b in zip(luar_out.result, mean_out.result, strict=True):
            np.testing.assert_array_equal(a, b)
        assert luar_out.measurements["luar"]["upload_fraction"] == 1.0
        luar_state, mean_state = luar_out.state, mean_out.state


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_client_is_dropped(bad):
    process = keras_luar.LuarFactory(1).create(VALUE_TYPE, WEIGHT_TYPE)
    state = _with_norms(process.initialize(), np.ones(3))
    rng = np.random.default_rng(3)
    clients = _clients(rng)
    clients[1][1][0] = bad  # a bias entry of client 1
    out = process.next(state, clients, [1.0, 1.0, 1.0])
    good = [clients[0], clients[2]]
    for i, got in enumerate(out.result):
        np.testing.assert_allclose(got, (good[0][i] + good[1][i]) / 2, rtol=1e-6)
        assert np.all(np.isfinite(got))
    for got in out.state.last_updates:
        assert np.all(np.isfinite(got))
    assert out.measurements["luar"]["num_dropped_clients"] == 1
    assert out.measurements["luar"]["num_clients"] == 3
    assert np.all(np.isfinite(out.state.scores))


def test_all_clients_dropped_keeps_stored_state():
    process = keras_luar.LuarFactory(1).create(VALUE_TYPE, WEIGHT_TYPE)
    rng = np.random.default_rng(4)
    first = process.next(_with_norms(process.initialize(), np.ones(3)), _clients(rng), [1.0] * 3)
    state = first.state
    clients = _clients(rng)
    for c in clients:
        c[0][0, 0] = np.nan
    out = process.next(_with_norms(state, np.ones(3)), clients, [1.0] * 3)
    assert out.measurements["luar"]["num_dropped_clients"] == 3
    for a, b in zip(out.state.last_updates, state.last_updates, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(out.state.scores, state.scores)
    mask = np.asarray(state.recycle_mask)
    for j, i in enumerate([0, 2, 3]):
        expected = state.last_updates[j] if mask[j] else np.zeros(SHAPES[i])
        np.testing.assert_array_equal(out.result[i], expected)
    assert all(np.all(np.isfinite(r)) for r in out.result)


def test_zero_weight_client_is_dropped_under_uniform_weighting():
    # TFF's client work zeroes a non-finite update and gives it weight 0; uniform
    # weighting must not count that zero update as a real one.
    process = keras_luar.LuarFactory(1).create(VALUE_TYPE, WEIGHT_TYPE)
    rng = np.random.default_rng(5)
    clients = _clients(rng)
    out = process.next(_with_norms(process.initialize(), np.ones(3)), clients, [1.0, 0.0, 1.0])
    np.testing.assert_allclose(out.result[0], (clients[0][0] + clients[2][0]) / 2, rtol=1e-6)
    assert out.measurements["luar"]["num_dropped_clients"] == 1


def test_missing_weight_norms_are_reported_and_fall_back_to_update_norm():
    process = keras_luar.LuarFactory(1).create(VALUE_TYPE, WEIGHT_TYPE)
    rng = np.random.default_rng(6)
    clients = _clients(rng)
    out = process.next(process.initialize(), clients, [1.0] * 3)
    assert bool(out.measurements["luar"]["weight_norms_missing"])
    mean_w1 = np.mean([c[0] for c in clients], axis=0)
    np.testing.assert_allclose(out.state.scores[0], np.linalg.norm(mean_w1) / (1 + 1e-6), rtol=1e-5)
    # Norms consumed by one round are cleared, so a process that stops writing them is caught.
    assert np.all(np.asarray(out.state.weight_norms) < 0)
    written = process.next(_with_norms(out.state, np.ones(3)), clients, [1.0] * 3)
    assert not bool(written.measurements["luar"]["weight_norms_missing"])


def test_same_seed_same_masks_and_seed_is_used():
    def masks(seed):
        process = keras_luar.LuarFactory(1, seed=seed).create(VALUE_TYPE, WEIGHT_TYPE)
        state = process.initialize()
        rng = np.random.default_rng(0)
        out = []
        for _ in range(8):
            state = process.next(_with_norms(state, np.ones(3)), _clients(rng), [1.0] * 3).state
            out.append(tuple(np.asarray(state.recycle_mask)))
        return out

    assert masks(3) == masks(3)
    # 8 draws over 3 comparable layers: the sequences of two seeds coincide with tiny
    # probability; seeds 3 and 4 were checked to differ, which shows the seed is used.
    assert masks(3) != masks(4)


def test_inner_factory_is_used():
    inner = tff.aggregators.MeanFactory(value_sum_factory=tff.aggregators.SumFactory())
    process = keras_luar.LuarFactory(1, inner_factory=inner).create(VALUE_TYPE, WEIGHT_TYPE)
    out = process.next(
        _with_norms(process.initialize(), np.ones(3)), _clients(np.random.default_rng(0)), [1.0] * 3
    )
    assert "mean_value" in tff.structure.name_list(
        process.next.type_signature.result.measurements.member.inner
    )
    assert out.measurements["luar"]["num_clients"] == 3


# ---- configuration errors -------------------------------------------------------------


@pytest.mark.parametrize("bad", [1.5, True, "2", None])
def test_delta_not_int(bad):
    with pytest.raises(TypeError, match="num_recycled_layers"):
        keras_luar.LuarFactory(bad)


def test_delta_negative():
    with pytest.raises(ValueError, match=r"num_recycled_layers.*Received: num_recycled_layers=-1"):
        keras_luar.LuarFactory(-1)


@pytest.mark.parametrize("delta", [3, 4])
def test_delta_not_below_number_of_candidates(delta):
    factory = keras_luar.LuarFactory(delta, variable_names=NAMES)
    with pytest.raises(ValueError, match=r"L=3 \(w1, w2, w3\)") as info:
        factory.create(VALUE_TYPE, WEIGHT_TYPE)
    assert f"num_recycled_layers={delta}" in str(info.value)


def test_value_type_without_candidates():
    value_type = tff.types.to_type([(np.float32, (3,)), (np.float32, ())])
    with pytest.raises(ValueError, match="no recycling candidate"):
        keras_luar.LuarFactory(0).create(value_type, WEIGHT_TYPE)


def test_integer_value_type_is_rejected():
    with pytest.raises(TypeError, match="structure of float"):
        keras_luar.LuarFactory(0).create(tff.types.to_type([(np.int32, (3, 3))]), WEIGHT_TYPE)


def test_integer_weight_type_is_rejected():
    with pytest.raises(TypeError, match="weight_type"):
        keras_luar.LuarFactory(0).create(VALUE_TYPE, tff.TensorType(np.int32))


def test_bad_client_weighting():
    with pytest.raises(ValueError, match="client_weighting"):
        keras_luar.LuarFactory(1, client_weighting="examples")


def test_non_factory_inner_is_rejected():
    with pytest.raises(TypeError, match="inner_factory"):
        keras_luar.LuarFactory(1, inner_factory=object())


def test_unweighted_inner_factory_needs_uniform_weighting():
    with pytest.raises(ValueError, match="client_weighting.*'uniform'"):
        keras_luar.LuarFactory(
            1, inner_factory=tff.aggregators.SumFactory(), client_weighting="example"
        )
