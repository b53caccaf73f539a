"""FederatedTrainer with `upload_budget` and `inner_aggregator` (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from test_trainer import _client_data, _model

import keras_luar


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
