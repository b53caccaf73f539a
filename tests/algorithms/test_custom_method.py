"""A method registered from outside the library runs through fit, compare and the CLI.

The toy method "halfstep" is FedAvg whose server moves only a fraction `step` of the
way along the clients' mean update. Nothing in the trainer, the comparison or the
command line names it: they read its `AlgorithmSpec` from the registry.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
from test_trainer import _fit, _model, _trainer, _weights

from keras_luar import cli
from keras_luar._validation import check_float
from keras_luar.algorithms import registry
from keras_luar.algorithms.fedavg import build_fedavg_family
from keras_luar.algorithms.spec import AlgorithmSpec, Option
from keras_luar.compare import compare_methods
from keras_luar.quickstart import DigitsSetup


def _build_halfstep(context):
    import tensorflow_federated as tff

    server = tff.learning.optimizers.build_sgdm(context.options["step"])
    return build_fedavg_family(dataclasses.replace(context, server_optimizer=server))


HALFSTEP = AlgorithmSpec(
    name="halfstep",
    title="HalfStep",
    reference="a test of keras_luar",
    build=_build_halfstep,
    summary="FedAvg whose server applies a fraction of the mean update",
    options={"step": Option(0.5, lambda n, v: check_float(n, v, 0.0), "server step")},
    luar="optional",
    server_optimizer="none",
    comparison_options={"step": 0.5},
)


@pytest.fixture
def halfstep():
    registry.register(HALFSTEP)
    yield HALFSTEP
    registry.unregister("halfstep")


def test_the_registry_lists_it_after_the_builtins(halfstep):
    assert registry.names()[-1] == "halfstep"
    assert registry.get("halfstep") is halfstep
    with pytest.raises(ValueError, match="built-in"):
        registry.unregister("fedavg")


def test_fit_runs_it_with_its_option_and_luar_on_top(halfstep):
    initial = _weights(_model())
    avg = _trainer(algorithm="fedavg", num_recycled_layers=0)
    _fit(avg, rounds=1)
    half = _trainer(algorithm="halfstep", num_recycled_layers=0, step=0.25)
    history = _fit(half, rounds=1)
    assert history.history["comm_cost"] == [1.0]
    # Same seed, clients and start: the toy's step is a quarter of FedAvg's.
    for w0, wa, wh in zip(initial, _weights(avg.model), _weights(half.model), strict=True):
        np.testing.assert_allclose(wh - w0, 0.25 * (wa - w0), atol=1e-6)
    # LUAR stacks on it because its spec says so; its option is checked by its spec.
    luar = _fit(_trainer(algorithm="halfstep", num_recycled_layers=1), rounds=2)
    assert len(luar.history["recycled_layers"][1]) == 1
    with pytest.raises(ValueError, match="step"):
        _trainer(algorithm="halfstep", step=-1.0)
    with pytest.raises(ValueError, match="server"):  # its spec takes no server optimizer
        _trainer(algorithm="halfstep", server_optimizer=tf.keras.optimizers.SGD(1.0))


def test_compare_and_the_cli_run_it(halfstep, tmp_path, capsys):
    setup = DigitsSetup(rounds=2, num_clients=4, clients_per_round=2, local_steps=2)
    result = compare_methods(["fedavg", "halfstep", "halfstep+luar"], seeds=[0], setup=setup)
    assert set(result.histories) == {"FedAvg", "HalfStep", "HalfStep+LUAR"}
    assert result.histories["HalfStep+LUAR"][0].history["comm_cost"][-1] < 1.0
    assert "| HalfStep |" in result.to_markdown()

    out = tmp_path / "h.json"
    argv = ["run", "--algorithm", "halfstep", "--rounds", "2", "--num-clients", "6"]
    argv += ["--clients-per-round", "3", "--local-steps", "2", "--verbose", "0"]
    assert cli.main([*argv, "--history-json", str(out)]) == 0
    assert len(json.loads(out.read_text())["history"]["loss"]) == 2
    assert "halfstep: final val_accuracy" in capsys.readouterr().out
