"""Every algorithm through `FederatedTrainer`: wiring, accounting, options and their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from test_trainer import PER_ROUND, TOTAL_PARAMS, _client_data, _model, _trainer, _weights

from keras_luar.aggregators import QuantizationFactory

ROUNDS = 3


def _run(rounds=ROUNDS, **kwargs):
    kwargs.setdefault("num_recycled_layers", None)
    trainer = _trainer(**kwargs)
    history = trainer.fit(_client_data(), rounds=rounds, clients_per_round=PER_ROUND, verbose=0)
    return trainer, history


def _comparable(history):
    return {k: v for k, v in history.history.items() if k != "round_time"}


def test_fedprox_without_proximal_term_is_fedluar_and_with_it_differs():
    luar, luar_history = _run(algorithm="fedluar", num_recycled_layers=1)
    prox0, prox0_history = _run(algorithm="fedprox", num_recycled_layers=1, proximal_strength=0.0)
    assert _comparable(prox0_history) == _comparable(luar_history)
    for a, b in zip(_weights(luar.model), _weights(prox0.model), strict=True):
        np.testing.assert_array_equal(a, b)
    prox, prox_history = _run(algorithm="fedprox", num_recycled_layers=1, proximal_strength=0.5)
    assert prox_history.history["recycled_layers"][0] == []
    assert (
        max(
            np.abs(a - b).max()
            for a, b in zip(_weights(luar.model), _weights(prox.model), strict=True)
        )
        > 1e-4
    )


def test_fedopt_applies_the_server_learning_rate_to_the_aggregate():
    initial = _weights(_model())
    avg, _ = _run(rounds=1, algorithm="fedavg")
    opt, history = _run(rounds=1, algorithm="fedopt", server_optimizer=tf.keras.optimizers.SGD(1.5))
    for w0, wa, wo in zip(initial, _weights(avg.model), _weights(opt.model), strict=True):
        np.testing.assert_allclose(wo, w0 + 1.5 * (wa - w0), rtol=1e-5, atol=1e-6)
    assert history.history["comm_cost"] == [1.0]


def test_fedopt_with_luar_recycles_before_the_server_step():
    _, history = _run(
        algorithm="fedopt", num_recycled_layers=1, server_optimizer=tf.keras.optimizers.SGD(1.2)
    )
    assert [len(r) for r in history.history["recycled_layers"]] == [0, 1, 1]
    assert history.history["comm_cost"][-1] < 1.0


@pytest.mark.parametrize("delta", [0, 1])
def test_fedpaq_counts_quantized_bytes(delta):
    trainer, history = _run(algorithm="fedpaq", quantization_levels=8, num_recycled_layers=delta)
    quantizer = QuantizationFactory(8)
    sizes = {v.name: quantizer.encoded_bytes(v.shape, tf.float32) for v in trainer.layout.trainable}
    full = sum(sizes.values())
    for t in range(ROUNDS):
        sent = full - sum(sizes[n] for n in history.history["recycled_layers"][t])
        assert history.history["upload_bytes"][t] == PER_ROUND * sent
    expected = np.cumsum(history.history["upload_bytes"]) / (
        np.arange(1, ROUNDS + 1) * PER_ROUND * 4 * TOTAL_PARAMS
    )
    np.testing.assert_allclose(history.history["comm_cost"], expected)
    # s = 8: 4 level bits + 1 sign bit a coordinate, plus a float norm per tensor.
    if delta == 0:
        assert 5 / 32 < history.history["comm_cost"][0] < 5 / 32 + 6 * 4 / (4 * TOTAL_PARAMS) + 0.01
    assert all(math.isfinite(v) for v in history.history["loss"])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"algorithm": "fedavg", "lbgm_threshold": 0.5}, TypeError, r"'lbgm_threshold'.*'fedavg'"),
        ({"algorithm": "lbgm", "num_recycled_layers": 1}, ValueError, r"cannot use LUAR.*fedluar"),
        ({"algorithm": "fedopt"}, ValueError, r"server_optimizer.*FedOpt"),
        (
            {"algorithm": "fedprox", "proximal_strength": -0.1},
            ValueError,
            r"proximal_strength.*-0.1",
        ),
        ({"algorithm": "fedpaq", "quantization_levels": 0}, ValueError, r"quantization_levels.*0"),
        ({"algorithm": "fedpaq", "quantization_levels": 2.5}, TypeError, r"quantization_levels"),
        ({"algorithm": "fedlama", "aggregation_interval": 0}, ValueError, r"aggregation_interval"),
        ({"algorithm": "lbgm", "lbgm_threshold": 1.5}, ValueError, r"lbgm_threshold.*\[0.0, 1.0\]"),
        ({"algorithm": "lbgm", "lbgm_threshold": -0.1}, ValueError, r"lbgm_threshold"),
        ({"algorithm": "fedpart", "warmup_rounds": -1}, ValueError, r"warmup_rounds.*-1"),
        ({"algorithm": "fedpart", "rounds_per_group": 0}, ValueError, r"rounds_per_group"),
    ],
)
def test_bad_algorithm_options_fail_at_construction(kwargs, error, match):
    kwargs.setdefault("num_recycled_layers", None)
    with pytest.raises(error, match=match):
        _trainer(**kwargs)


class _Interrupt(tf.keras.callbacks.Callback):
    def __init__(self, at_round):
        super().__init__()
        self.at_round = at_round

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.at_round:
            raise KeyboardInterrupt


STATEFUL = [
    ("lbgm", {"lbgm_threshold": 0.3}),
    ("fedlama", {"aggregation_interval": 2, "fedavg_rounds": 2}),
]


@pytest.mark.parametrize("algorithm,options", STATEFUL + [("fedpart", {"warmup_rounds": 1})])
def test_layerwise_methods_report_consistent_accounting(algorithm, options):
    trainer, history = _run(rounds=5, algorithm=algorithm, **options)
    h = history.history
    assert "recycled_layers" not in h and "num_recycled" not in h
    assert len(h["aggregated"]) == 5 and all(len(row) == 6 for row in h["aggregated"])
    assert h["aggregated"][0] == [1.0] * 6  # every method starts with a full round
    expected = np.cumsum(h["upload_bytes"]) / (np.arange(1, 6) * PER_ROUND * 4 * TOTAL_PARAMS)
    np.testing.assert_allclose(h["comm_cost"], expected)
    assert h["comm_cost"][-1] < 1.0  # each of them saved something within 5 rounds
    counts = np.sum(h["aggregated"], axis=0)
    np.testing.assert_allclose(list(trainer.aggregation_counts.values()), counts, rtol=1e-6)
    assert all(math.isfinite(v) for v in h["loss"])


def test_fedlama_keeps_its_clients_for_a_period(monkeypatch):
    """Round 2k+1 must get the clients (and their states) of round 2k back."""
    trainer = _trainer(algorithm="fedlama", num_recycled_layers=None, aggregation_interval=2)
    seen = []
    build = trainer.build_process

    def recording_build(spec):
        process = build(spec)
        original = process.next

        def next_fn(state, data, client_states):
            seen.append([int(s["round_num"]) for s in client_states])
            return original(state, data, client_states)

        process.next = next_fn
        return process

    monkeypatch.setattr(trainer, "build_process", recording_build)
    trainer.fit(_client_data(), rounds=4, clients_per_round=PER_ROUND, verbose=0)
    # A client state records the last round its client trained (-1: never).
    assert seen[1] == [0] * PER_ROUND and seen[3] == [2] * PER_ROUND
    assert all(r < 0 or r <= 1 for r in seen[2])


@pytest.mark.parametrize("algorithm,options", STATEFUL)
def test_stateful_methods_resume_to_the_same_result(tmp_path, algorithm, options):
    kwargs = dict(algorithm=algorithm, num_recycled_layers=None, **options)
    fit = dict(rounds=5, clients_per_round=PER_ROUND, verbose=0)
    # Interrupted in round 4, the run resumes from the 3 saved rounds: mid-period for
    # FedLAMA (φ = 2), where clients continue from their own copies.
    full = _trainer(**kwargs)
    full_history = full.fit(_client_data(), **fit)
    directory = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        _trainer(**kwargs).fit(
            _client_data(), checkpoint_dir=directory, callbacks=[_Interrupt(4)], **fit
        )
    resumed = _trainer(model=_model(seed=99), **kwargs)
    history = resumed.fit(_client_data(), checkpoint_dir=directory, **fit)
    assert _comparable(history) == _comparable(full_history)
    for a, b in zip(_weights(full.model), _weights(resumed.model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fedlama_refuses_a_server_optimizer():
    with pytest.raises(ValueError, match=r"server_optimizer.*FedLAMA"):
        _trainer(
            algorithm="fedlama",
            num_recycled_layers=None,
            server_optimizer=tf.keras.optimizers.SGD(1.0),
        )


def _bn_model():
    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential(
        [
            tf.keras.Input((4,)),
            tf.keras.layers.BatchNormalization(name="bn"),
            tf.keras.layers.Dense(8, activation="tanh", name="d1"),
            tf.keras.layers.Dense(3, name="out"),
        ]
    )


@pytest.mark.parametrize("algorithm", ["fedluar", "fedpart", "fedlama", "lbgm"])
def test_batchnorm_statistics_come_from_training_by_default(algorithm):
    delta = 1 if algorithm == "fedluar" else None  # the BN model has 2 candidates
    trainer = _trainer(model=_bn_model(), algorithm=algorithm, num_recycled_layers=delta)
    assert trainer.bn_statistics == "average"
    trainer.fit(_client_data(), rounds=2, clients_per_round=PER_ROUND, verbose=0)
    bn = trainer.model.get_layer("bn")
    assert np.abs(bn.moving_mean.numpy()).max() > 1e-3  # moved from its initial zeros
    assert np.abs(bn.moving_variance.numpy() - 1.0).max() > 1e-3  # and from its ones


@pytest.mark.parametrize("algorithm", ["fedpart", "fedlama"])
def test_local_batchnorm_statistics_also_leave_the_initial_values(algorithm):
    trainer = _trainer(
        model=_bn_model(), algorithm=algorithm, num_recycled_layers=None, bn_statistics="local"
    )
    trainer.fit(_client_data(), rounds=2, clients_per_round=PER_ROUND, verbose=0)
    assert np.abs(trainer.model.get_layer("bn").moving_mean.numpy()).max() > 1e-3


@pytest.mark.parametrize("algorithm", ["fedavg", "fedluar", "fedprox", "fedopt", "fedpaq", "lbgm"])
def test_methods_without_per_client_statistics_refuse_local(algorithm):
    options = {"server_optimizer": tf.keras.optimizers.SGD(1.0)} if algorithm == "fedopt" else {}
    with pytest.raises(ValueError, match=r"bn_statistics.*\('average',\).*'local'"):
        _trainer(algorithm=algorithm, num_recycled_layers=None, bn_statistics="local", **options)


def test_augmentation_is_applied_to_every_training_example():
    """Negating inputs by augmentation trains exactly like negated data."""
    x, y, parts = _client_data()
    negated = _trainer(augmentation=lambda image, seed: -image)
    plain = _trainer()
    fit = dict(rounds=2, clients_per_round=PER_ROUND, verbose=0)
    h1 = negated.fit((x, y, parts), **fit)
    h2 = plain.fit((-x, y, parts), **fit)
    assert _comparable(h1) == _comparable(h2)
    for a, b in zip(_weights(negated.model), _weights(plain.model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_random_crop_flip_is_a_seeded_crop_of_the_padded_image():
    from keras_luar.data.augment import random_crop_flip

    rng = np.random.default_rng(0)
    image = rng.random((6, 5, 2)).astype(np.float32)
    augment = random_crop_flip(2)
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
    outputs = []
    for s in range(12):
        out = augment(tf.constant(image), tf.constant([s, 7], tf.int64)).numpy()
        candidates = [
            c
            for dy in range(5)
            for dx in range(5)
            for c in (padded[dy : dy + 6, dx : dx + 5], padded[dy : dy + 6, dx : dx + 5][:, ::-1])
        ]
        assert any(np.array_equal(out, c) for c in candidates)
        again = augment(tf.constant(image), tf.constant([s, 7], tf.int64)).numpy()
        np.testing.assert_array_equal(out, again)
        outputs.append(out.tobytes())
    assert len(set(outputs)) > 6  # seeds give different crops and flips
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(-1)


def test_augmentation_refuses_batched_client_data():
    x, y, parts = _client_data()
    batched = [tf.data.Dataset.from_tensor_slices((x[p], y[p])).batch(4) for p in parts]
    with pytest.raises(ValueError, match="augmentation.*unbatched"):
        _trainer(augmentation=lambda image, seed: image, batch_size=None).fit(
            batched, rounds=1, clients_per_round=PER_ROUND, verbose=0
        )


def _one_round(clients_per_round=1, **kwargs):
    kwargs.setdefault("num_recycled_layers", None)
    trainer = _trainer(model=_bn_model(), **kwargs)
    trainer.fit(_client_data(), rounds=1, clients_per_round=clients_per_round, verbose=0)
    return trainer


def test_fedpaq_quantizes_the_change_of_the_batchnorm_statistics():
    levels = 4
    exact = _one_round(algorithm="fedpaq", quantization_levels=levels, quantize_statistics=False)
    quantized = _one_round(algorithm="fedpaq", quantization_levels=levels)
    initial = _bn_model().get_layer("bn")
    for name in ("moving_mean", "moving_variance"):
        start = getattr(initial, name).numpy()
        d = getattr(exact.model.get_layer("bn"), name).numpy() - start  # one client: its change
        q = getattr(quantized.model.get_layer("bn"), name).numpy() - start
        assert np.abs(d).max() > 1e-4
        assert not np.allclose(q, d, rtol=1e-3, atol=0)  # the noise of quantization
        # Q(d) lies on the grid ||d||·k/s with the signs of d.
        steps = np.abs(q) / (np.linalg.norm(d) / levels)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
        assert np.all((np.sign(q) == np.sign(d)) | (q == 0))


def test_fedpaq_requantizes_the_aggregate_only_with_luar_by_default():
    def weights(**kwargs):
        return _weights(_one_round(algorithm="fedpaq", quantization_levels=4, **kwargs).model)

    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    alone = weights()
    assert same(alone, weights(requantize_aggregate=False))
    assert not same(alone, weights(requantize_aggregate=True))
    with_luar = weights(num_recycled_layers=1)
    assert same(with_luar, weights(num_recycled_layers=1, requantize_aggregate=True))
    assert not same(with_luar, weights(num_recycled_layers=1, requantize_aggregate=False))
