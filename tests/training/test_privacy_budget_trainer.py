"""FederatedTrainer with `upload_budget` and `inner_aggregator` (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from test_trainer import _client_data, _Interrupt, _model, _weights

import keras_luar
from keras_luar.quickstart import digits_cnn


def _trainer(**kwargs):
    options = dict(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        local_steps=2,
        batch_size=8,
        client_optimizer=tf.keras.optimizers.SGD(0.1),
        seed=3,
    )
    options.update(kwargs)
    return keras_luar.FederatedTrainer(_model(), **options)


def _dp():
    return tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(0.1, 3, 1.0)


def test_budget_and_dp_run_on_the_in_process_backend():
    trainer = _trainer(upload_budget=0.6, inner_aggregator=_dp(), backend="tensorflow")
    history = trainer.fit(_client_data(), rounds=8, clients_per_round=3, verbose=0).history
    layout = trainer.layout
    full = float(layout.trainable_bytes)
    largest = max(float(np.prod(v.shape)) * 4 for v in layout.candidates)
    assert history["num_recycled"][0] == 0
    cost = history["comm_cost"][-1]
    assert 0.6 - largest / (8 * full) < cost <= 0.6 + 1e-9
    assert np.all(np.isfinite(history["loss"]))


def test_construction_errors_name_the_argument():
    with pytest.raises(ValueError, match="upload_budget.*num_recycled_layers"):
        _trainer(upload_budget=0.5, num_recycled_layers=1)
    with pytest.raises(ValueError, match="upload_budget.*fedavg"):
        _trainer(algorithm="fedavg", upload_budget=0.5)
    with pytest.raises(ValueError, match="client_weighting.*'uniform'"):
        _trainer(inner_aggregator=_dp(), client_weighting="example")
    with pytest.raises(ValueError, match="inner_aggregator.*fedlama"):
        _trainer(algorithm="fedlama", inner_aggregator=_dp())
    with pytest.raises(TypeError, match="inner_aggregator"):
        _trainer(inner_aggregator=object())


# The History entries of a LUAR run that must come back identical after a resume; the
# others (losses, metrics, scores) are compared to float tolerance, round_time not at all.
_EXACT = (
    "upload_params", "upload_bytes", "comm_cost", "num_recycled", "num_dropped_clients",
    "recycled_layers", "aggregated",
)  # fmt: skip
_TIMING = ("round_time",)


def _budget_digits_run(tmp_path, name, budget=0.4, model_seed=0, callbacks=()):
    data = keras_luar.data.load_digits_federated(num_clients=6, alpha=0.5, seed=0)
    tf.keras.utils.set_random_seed(model_seed)
    trainer = keras_luar.FederatedTrainer(
        digits_cnn(data.num_classes),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        algorithm="fedluar",
        upload_budget=budget,
        local_steps=2,
        batch_size=16,
        client_optimizer=tf.keras.optimizers.SGD(0.05, momentum=0.9),
        seed=5,
    )
    history = trainer.fit(
        data, rounds=6, clients_per_round=3, validation_data=data.test_data,
        checkpoint_dir=str(tmp_path / name), callbacks=list(callbacks), verbose=0,
    )  # fmt: skip
    return trainer, history.history


def test_budget_run_resumes_to_the_uninterrupted_history(tmp_path):
    budget, rounds = 0.4, 6
    full, want = _budget_digits_run(tmp_path, "full", budget)
    with pytest.raises(KeyboardInterrupt):
        _budget_digits_run(tmp_path, "interrupted", budget, callbacks=[_Interrupt(at_round=3)])
    # Other initial weights: the checkpoint (model and LUAR's state) must win.
    resumed, got = _budget_digits_run(tmp_path, "interrupted", budget, model_seed=99)

    assert set(got) == set(want)
    for key in sorted(set(want) - set(_TIMING)):
        assert len(got[key]) == rounds, key
        if key in _EXACT:
            assert got[key] == want[key], key
        else:  # loss, accuracy, val_loss, val_accuracy, layer_scores
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7, err_msg=key)
    for a, b in zip(_weights(full.model), _weights(resumed.model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    # The budget decided the masks: after the interruption some round recycled more than
    # one layer. The cumulative upload (comm_cost, the luar/cumulative_upload_fraction of
    # the run) ends at most at b, and less than one round's largest layer below it
    # (dense1/kernel, 86% of the model, spread over the 6 rounds).
    assert max(got["num_recycled"][3:]) >= 2
    per_client = float(resumed.layout.trainable_bytes)  # FedAvg's upload per client and round
    largest = max(float(np.prod(v.shape)) * 4 for v in resumed.layout.candidates)
    fraction = np.cumsum(got["upload_bytes"]) / (3 * per_client * np.arange(1, rounds + 1))
    np.testing.assert_allclose(got["comm_cost"], fraction)
    assert budget - largest / (rounds * per_client) < got["comm_cost"][-1] <= budget + 1e-9


def _secure_mean(bound=10.0):
    return tff.aggregators.UnweightedMeanFactory(
        value_sum_factory=tff.aggregators.SecureSumFactory(bound)
    )


def test_secure_summation_under_luar_matches_the_plain_mean_on_both_backends():
    # A mean over SecureSumFactory returns the plain mean up to its 32-bit quantization,
    # so both backends' runs follow the plain-mean run: same recycled layers, same upload,
    # same weights (the plain run's two backends agree: tests/backends).
    runs = {}
    for name, inner, backend in (
        ("plain", None, "tff"),
        ("secure-tff", _secure_mean(), "tff"),
        ("secure-tensorflow", _secure_mean(), "tensorflow"),
    ):
        trainer = _trainer(inner_aggregator=inner, client_weighting="uniform", backend=backend)
        history = trainer.fit(_client_data(), rounds=4, clients_per_round=3, verbose=0).history
        runs[name] = (history, _weights(trainer.model))
    plain, plain_weights = runs.pop("plain")
    assert sum(plain["num_recycled"]) > 0
    for name, (history, weights) in runs.items():
        for key in ("recycled_layers", "num_recycled", "upload_bytes", "comm_cost"):
            assert history[key] == plain[key], (name, key)
        for a, b in zip(weights, plain_weights, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(history["loss"], plain["loss"], rtol=1e-4, err_msg=name)


def test_secure_aggregator_under_luar_trains_with_example_weights():
    trainer = _trainer(inner_aggregator=tff.learning.secure_aggregator())
    history = trainer.fit(_client_data(), rounds=4, clients_per_round=3, verbose=0).history
    assert sum(history["num_recycled"]) > 0
    assert np.all(np.isfinite(history["loss"]))
    full = float(trainer.layout.trainable_bytes)
    for r in range(4):  # a recycled layer is not sent: 4 bytes for each sent float32
        recycled = sum(
            float(np.prod(v.shape)) * 4
            for v in trainer.layout.candidates
            if v.name in history["recycled_layers"][r]
        )
        assert history["upload_bytes"][r] == pytest.approx((full - recycled) * 3)
