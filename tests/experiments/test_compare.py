"""`keras_luar.compare`, `keras_luar.plotting` and `keras-luar compare`.

Everything but one tiny end-to-end run works on hand-made histories, so the
table and the plot are checked against numbers computed by hand or by numpy.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_luar import cli, describe_model  # noqa: E402
from keras_luar.compare import (  # noqa: E402
    DEFAULT_METHODS,
    ComparisonResult,
    MethodSpec,
    compare_methods,
    parse_method_spec,
)
from keras_luar.plotting import (  # noqa: E402
    plot_accuracy_vs_communication,
    relative_cumulative_upload,
)
from keras_luar.quickstart import DigitsSetup  # noqa: E402

TINY = DigitsSetup(rounds=2, num_clients=4, clients_per_round=2, local_steps=2)
KNOWN = "fedavg, fedluar, fedlama, lbgm, fedpart, fedpaq, fedprox, fedopt"
ROW = re.compile(r"^\| (.+?) \| ([\d.]+) ± ([\d.]+) \| ([\d.]+) \|$", re.M)


# ---- method specs -------------------------------------------------------------------


def test_default_methods_and_their_names():
    specs = [parse_method_spec(m) for m in DEFAULT_METHODS]
    assert [s.label for s in specs] == [
        "FedAvg", "FedLUAR", "FedLAMA", "LBGM", "FedPart", "FedPAQ", "FedPAQ+LUAR",
        "FedProx", "FedProx+LUAR", "FedOpt", "FedOpt+LUAR",
    ]  # fmt: skip
    assert [s.uses_luar for s in specs] == [
        False, True, False, False, False, False, True, False, True, False, True,
    ]  # fmt: skip
    # The paper's settings unless a spec overrides them.
    options = {s.label: s.trainer_options() for s in specs}
    assert options["FedAvg"] == options["FedLUAR"] == options["LBGM"] == {}
    assert options["FedPAQ"] == options["FedPAQ+LUAR"] == {"quantization_levels": 8}
    assert options["FedProx+LUAR"] == {"proximal_strength": 0.001}
    assert options["FedOpt+LUAR"] == {"server_learning_rate": 1.2}


@pytest.mark.parametrize(
    "text, algorithm, luar, options",
    [
        ("fedavg", "fedavg", False, ()),
        (" FedProx+LUAR ", "fedprox", True, ()),
        ("fedpaq:quantization_levels=16", "fedpaq", False, (("quantization_levels", 16),)),
        (
            "fedopt+luar:server_learning_rate=0.9, client_weighting=example",
            "fedopt", True, (("server_learning_rate", 0.9), ("client_weighting", "example")),
        ),
        ("lbgm:lbgm_threshold=1e-3", "lbgm", False, (("lbgm_threshold", 0.001),)),
        ("fedpart:warmup_rounds=3,verbose_schedule=False", "fedpart", False,
         (("warmup_rounds", 3), ("verbose_schedule", False))),
    ],
)  # fmt: skip
def test_parse_method_spec(text, algorithm, luar, options):
    spec = parse_method_spec(text)
    assert spec == MethodSpec(algorithm, luar=luar, options=options)
    for (_, got), (_, want) in zip(spec.options, options, strict=True):
        assert type(got) is type(want)
    assert parse_method_spec(str(spec)) == spec  # the text form round-trips
    assert parse_method_spec(spec) is spec


def test_options_override_defaults_and_name_the_row():
    spec = parse_method_spec("fedopt:server_learning_rate=0.5")
    assert spec.trainer_options() == {"server_learning_rate": 0.5}
    assert spec.label == "FedOpt (server_learning_rate=0.5)"
    assert parse_method_spec("fedprox+luar:proximal_strength=0.01").display_name == "FedProx+LUAR"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", KNOWN),
        ("fedsgd", KNOWN),
        ("+luar", KNOWN),
        ("fedavg+luar", "only on fedpaq, fedprox, fedopt (FedAvg: it cannot take it)"),
        ("fedluar+luar", "(FedLUAR: it is LUAR already)"),
        ("fedlama+luar", "only on fedpaq, fedprox, fedopt"),
        ("lbgm+luar", "only on fedpaq, fedprox, fedopt"),
        ("fedpart+luar", "only on fedpaq, fedprox, fedopt"),
        ("fedprox+quant", "nothing or `+luar`"),
        ("fedprox+luar+luar", "nothing or `+luar`"),
        ("fedprox:mu", "key=value separated by commas, not 'mu'"),
        ("fedprox:", "key=value"),
        ("fedprox:=1", "key=value"),
        ("fedprox:mu=", "key=value"),
        ("fedprox:mu=1,,", "key=value"),
        ("fedprox:1mu=1", "Python identifiers, not '1mu'"),
        ("fedprox:mu=1,mu=2", "given more than once: mu"),
        ("fedprox:num_recycled_layers=3", "used by fedluar and `+luar`"),
        ("fedavg:seed=1", "no option `seed`, which the comparison sets"),
        ("fedopt:server_optimizer=adam", "no option `server_optimizer`"),
    ],
)
def test_bad_specs_say_what_is_wrong(text, fragment):
    with pytest.raises(ValueError) as info:
        parse_method_spec(text)
    message = str(info.value)
    assert message.startswith("Invalid value for argument `spec`. Expected ")
    assert fragment in message
    assert message.endswith(f"Received: spec={text!r}")  # the text as typed


def test_method_spec_checks_itself_and_types():
    with pytest.raises(ValueError, match="only on fedpaq, fedprox, fedopt"):
        MethodSpec("fedavg", luar=True)
    with pytest.raises(ValueError, match=KNOWN):
        MethodSpec("FedAvg")  # the constructor takes the algorithm name, not the label
    with pytest.raises(TypeError, match="Expected a str"):
        parse_method_spec(3)


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        (dict(methods=[]), ValueError, "at least one method"),
        (dict(methods=["fedavg", "FedAvg"]), ValueError, "FedAvg more than once"),
        (dict(methods=["fedavg", "fedavg+luar"]), ValueError, "only on fedpaq, fedprox, fedopt"),
        (dict(seeds=[]), ValueError, "one or more different seeds"),
        (dict(seeds=[1, 1]), ValueError, "one or more different seeds"),
        (dict(seeds=[-1]), ValueError, "`seeds`"),
        (dict(num_recycled_layers=-1), ValueError, "`num_recycled_layers`"),
        # The trainers are built before any training: the bad one (second) fails first.
        (dict(num_recycled_layers=4), ValueError, "L=4"),
        (dict(methods=["fedavg", "fedluar:no_such_option=1"]), TypeError, "no_such_option"),
    ],
)
def test_compare_methods_fails_before_anything_trains(kwargs, error, fragment):
    finished = []
    kwargs = {"methods": ["fedavg", "fedluar"], "seeds": [0], **kwargs}
    with pytest.raises(error, match=re.escape(fragment)):
        compare_methods(**kwargs, setup=TINY, on_result=lambda *a: finished.append(a))
    assert finished == []


def test_compare_on_the_batchnorm_model():
    setup = dataclasses.replace(TINY, model="bn_cnn")
    trainers = []
    result = compare_methods(
        ["fedavg", "fedpart"], seeds=[0], setup=setup,
        on_result=lambda spec, seed, history: trainers.append(spec.algorithm),
    )  # fmt: skip
    assert trainers == ["fedavg", "fedpart"]
    assert "Model: the digits BN CNN." in result.to_markdown()
    assert result.setup.model == "bn_cnn"
    with pytest.raises(ValueError, match=r"argument `model`.*'resnet'"):
        compare_methods(["fedavg"], seeds=[0], setup=dataclasses.replace(TINY, model="resnet"))


def test_the_batchnorm_model_has_the_cnns_candidates_and_statistics():
    from keras_luar.quickstart import digits_bn_cnn, digits_cnn

    bn, plain = describe_model(digits_bn_cnn()), describe_model(digits_cnn())
    assert bn.candidate_names == plain.candidate_names
    assert [v.name for v in bn.non_trainable] == [
        "bn1/moving_mean", "bn1/moving_variance", "bn2/moving_mean", "bn2/moving_variance",
    ]  # fmt: skip


def test_cli_rejects_a_bad_method_before_training(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", "--methods", "fedavg", "lbgm+luar"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --methods" in err and "only on fedpaq, fedprox, fedopt" in err


# ---- the table ----------------------------------------------------------------------


def _history(accuracy, comm, seconds, upload_bytes=None):
    """A hand-made History; `keras.callbacks.History` keeps its logs in `.history`."""
    history = tf.keras.callbacks.History()
    history.history = {"val_accuracy": list(accuracy), "comm_cost": list(comm),
                       "round_time": list(seconds)}  # fmt: skip
    if upload_bytes is not None:
        history.history["upload_bytes"] = list(upload_bytes)
    return history


def _hand_made_result():
    rng = np.random.default_rng(7)
    acc = rng.uniform(0.5, 0.99, size=(2, 3, 4))  # method, seed, round
    comm = rng.uniform(0.2, 1.0, size=(2, 3, 4))
    comm[0] = 1.0
    seconds = rng.uniform(0.1, 2.0, size=(2, 3, 4))
    histories = {
        # History objects for one method, plain dicts for the other: both are accepted.
        "FedAvg": [_history(acc[0, s], comm[0, s], seconds[0, s]) for s in range(3)],
        "FedLUAR": [_history(acc[1, s], comm[1, s], seconds[1, s]).history for s in range(3)],
    }
    result = ComparisonResult(
        histories, seeds=(0, 1, 2), num_recycled_layers=2,
        specs={"FedAvg": "fedavg", "FedLUAR": "fedluar"},
    )  # fmt: skip
    return result, acc, comm, seconds


def test_summary_and_markdown_match_numpy():
    result, acc, comm, seconds = _hand_made_result()
    final_acc, final_comm = acc[:, :, -1], comm[:, :, -1]
    rows = result.summary()
    assert [r.label for r in rows] == ["FedAvg", "FedLUAR"]
    for m, row in enumerate(rows):
        assert row.accuracy_mean == pytest.approx(np.mean(final_acc[m]))
        assert row.accuracy_std == pytest.approx(
            np.sqrt(np.mean((final_acc[m] - final_acc[m].mean()) ** 2))
        )
        assert row.comm_cost == pytest.approx(np.mean(final_comm[m]))
        assert row.train_seconds == pytest.approx(np.mean(seconds[m].sum(axis=1)))
        assert (row.num_seeds, row.rounds) == (3, 4)

    text = result.to_markdown()
    assert (
        text.splitlines()[0] == "| Method | Accuracy (mean ± std, %) | Comm (relative to FedAvg) |"
    )
    table = ROW.findall(text)
    assert [t[0] for t in table] == ["FedAvg", "FedLUAR"]
    for m, (_, mean, std, cost) in enumerate(table):
        assert float(mean) == pytest.approx(100 * final_acc[m].mean(), abs=0.005)
        assert float(std) == pytest.approx(100 * final_acc[m].std(), abs=0.005)
        assert float(cost) == pytest.approx(final_comm[m].mean(), abs=0.005)
    assert table[0][3] == "1.00"
    assert "after 4 rounds" in text and "seeds 0, 1, 2" in text and "δ = 2" in text


def test_csv_json_png_and_load(tmp_path):
    result, acc, comm, _ = _hand_made_result()
    # numpy scalars, also inside per-round lists, as a History may hold them.
    aggregated = [np.ones(3, np.float32), np.array([1.0, 0.5, 0.0], np.float32)]
    result.histories["FedAvg"][0].history["aggregated"] = [list(a) for a in aggregated]
    result.histories["FedAvg"][0].history["num_recycled"] = [np.int64(0), np.int64(2)]
    paths = result.save(tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == [
        "compare.csv", "compare.md", "compare.png", "histories.json",
    ]  # fmt: skip
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["markdown"].read_text() == result.to_markdown() + "\n"
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["spec"]) for r in rows] == [
        ("FedAvg", "fedavg"),
        ("FedLUAR", "fedluar"),
    ]
    for m, row in enumerate(rows):
        assert float(row["accuracy_mean"]) == pytest.approx(acc[m, :, -1].mean(), rel=1e-12)
        assert float(row["accuracy_std"]) == pytest.approx(acc[m, :, -1].std(), rel=1e-12)
        assert float(row["comm_cost"]) == pytest.approx(comm[m, :, -1].mean(), rel=1e-12)
        assert row["num_seeds"] == "3"
    loaded = ComparisonResult.load(tmp_path / "out")
    assert loaded.summary() == result.summary()
    assert (loaded.seeds, loaded.num_recycled_layers, loaded.specs) == (
        result.seeds, 2, result.specs,
    )  # fmt: skip
    assert loaded.histories["FedLUAR"][1]["val_accuracy"] == pytest.approx(acc[1, 1])
    assert loaded.histories["FedAvg"][0]["aggregated"] == [[1.0, 1.0, 1.0], [1.0, 0.5, 0.0]]
    assert loaded.histories["FedAvg"][0]["num_recycled"] == [0, 2]


def test_summary_names_a_missing_entry():
    result = ComparisonResult({"FedX": [{"comm_cost": [1.0]}]})
    with pytest.raises(ValueError, match="`val_accuracy` entries in every History of 'FedX'"):
        result.summary()


# ---- the plot -----------------------------------------------------------------------

# 4 rounds; FedAvg uploads 100 bytes a round, this method 100, 40, 60, 20.
# comm_cost[t] = (bytes so far) / (100 (t + 1)) = 100/100, 140/200, 200/300, 220/400.
PARTIAL = {
    "val_accuracy": [0.2, 0.4, 0.5, 0.7],
    "comm_cost": [1.0, 0.7, 2 / 3, 0.55],
    "upload_bytes": [100.0, 40.0, 60.0, 20.0],
}
# Cumulative upload over FedAvg's 400 bytes: 100/400, 140/400, 200/400, 220/400.
PARTIAL_X = [0.25, 0.35, 0.5, 0.55]


def test_relative_cumulative_upload_by_hand():
    np.testing.assert_allclose(relative_cumulative_upload(PARTIAL), PARTIAL_X)
    # Without upload_bytes: comm_cost[t] (t + 1) / T, the same numbers.
    no_bytes = {k: v for k, v in PARTIAL.items() if k != "upload_bytes"}
    np.testing.assert_allclose(relative_cumulative_upload(no_bytes), PARTIAL_X)
    fedavg = {"comm_cost": [1.0] * 4, "upload_bytes": [100.0] * 4}
    np.testing.assert_allclose(relative_cumulative_upload(fedavg), [0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="comm_cost"):
        relative_cumulative_upload({"val_accuracy": [0.1]})
    with pytest.raises(ValueError, match="as many `upload_bytes`"):
        relative_cumulative_upload({"comm_cost": [1.0, 1.0], "upload_bytes": [1.0]})


def test_plot_one_line_per_method_with_hand_computed_x():
    fedavg_runs = [
        {"val_accuracy": [0.1, 0.3, 0.6, 0.8], "comm_cost": [1.0] * 4, "upload_bytes": [100.0] * 4},
        {"val_accuracy": [0.3, 0.5, 0.6, 0.6], "comm_cost": [1.0] * 4, "upload_bytes": [100.0] * 4},
    ]
    fig = plot_accuracy_vs_communication(
        {"FedAvg": fedavg_runs,
         "Partial": _history(PARTIAL["val_accuracy"], PARTIAL["comm_cost"], [1.0] * 4,
                             PARTIAL["upload_bytes"])}
    )  # fmt: skip
    try:
        assert isinstance(fig, matplotlib.figure.Figure)
        (ax,) = fig.axes
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["FedAvg", "Partial"]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["FedAvg", "Partial"]
        np.testing.assert_allclose(lines[0].get_xdata(), [0.25, 0.5, 0.75, 1.0])
        np.testing.assert_allclose(lines[0].get_ydata(), [0.2, 0.4, 0.6, 0.7])  # mean of 2 seeds
        np.testing.assert_allclose(lines[1].get_xdata(), PARTIAL_X)
        np.testing.assert_allclose(lines[1].get_ydata(), PARTIAL["val_accuracy"])
        # One band, for the method with two runs: mean ± std (ddof 0) of each round.
        (band,) = ax.collections
        vertices = band.get_paths()[0].vertices
        for x, low, high in [(0.25, 0.1, 0.3), (0.5, 0.3, 0.5), (0.75, 0.6, 0.6), (1.0, 0.6, 0.8)]:
            ys = vertices[np.isclose(vertices[:, 0], x), 1]
            np.testing.assert_allclose([ys.min(), ys.max()], [low, high])
        assert ax.get_xlabel() == "Cumulative upload (fraction of FedAvg's total)"
        assert ax.get_ylabel() == "Held-out accuracy"  # val_ is whatever was held out
        assert "communication" in ax.get_title()
    finally:
        plt.close(fig)


def test_plot_on_given_axes_and_errors():
    fig, ax = plt.subplots()
    try:
        loss = {**PARTIAL, "val_loss": [2.0, 1.0, 0.5, 0.4]}
        assert plot_accuracy_vs_communication({"A": loss}, metric="val_loss", ax=ax) is fig
        assert ax.get_ylabel() == "Held-out loss"
        with pytest.raises(ValueError, match="metric='val_auc'"):
            plot_accuracy_vs_communication({"A": PARTIAL}, metric="val_auc", ax=ax)
        short = {k: v[:3] for k, v in PARTIAL.items()}
        with pytest.raises(ValueError, match=r"same number of rounds. Received: \[3, 4\]"):
            plot_accuracy_vs_communication({"A": [PARTIAL, short]}, ax=ax)
        with pytest.raises(ValueError, match="at least one method"):
            plot_accuracy_vs_communication({}, ax=ax)
    finally:
        plt.close(fig)


# ---- end to end ---------------------------------------------------------------------


def test_compare_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--methods", "fedavg", "fedluar", "--seeds", "0", "--rounds", "2", "--num-clients",
            "4", "--clients-per-round", "2", "--local-steps", "2", "--out", str(out)]  # fmt: skip
    assert cli.main(["compare", *argv]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^seed 0  FedAvg .*accuracy [\d.]+  comm 1\.000", printed, re.M)
    assert re.search(r"^seed 0  FedLUAR .*accuracy [\d.]+  comm [\d.]+", printed, re.M)
    for name in ("compare.md", "compare.csv", "histories.json", "compare.png"):
        assert (out / name).stat().st_size > 0

    methods = json.loads((out / "histories.json").read_text())["methods"]
    (fedavg,) = methods["FedAvg"]["histories"]
    (fedluar,) = methods["FedLUAR"]["histories"]
    # Same split, initial weights and clients: round 1 (nothing recycled yet) is identical.
    assert fedluar["val_accuracy"][0] == pytest.approx(fedavg["val_accuracy"][0], rel=1e-6)
    assert fedluar["val_loss"][0] == pytest.approx(fedavg["val_loss"][0], rel=1e-6)
    # Round 2 recycles δ = 2 kernels, so FedLUAR's cost is (1 + its round-2 fraction) / 2.
    assert len(fedluar["recycled_layers"][1]) == 2
    luar_comm = (1 + fedluar["upload_bytes"][1] / fedavg["upload_bytes"][1]) / 2
    assert luar_comm < 1

    table = ROW.findall((out / "compare.md").read_text())
    assert table == ROW.findall(printed)  # the printed table is the file's
    assert [t[0] for t in table] == ["FedAvg", "FedLUAR"]
    for (_, mean, std, cost), history, comm in zip(
        table, (fedavg, fedluar), (1.0, luar_comm), strict=True
    ):
        assert float(mean) == pytest.approx(100 * history["val_accuracy"][-1], abs=0.005)
        assert std == "0.00"  # one seed
        assert float(cost) == pytest.approx(comm, abs=0.005)
    with open(out / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[1]["comm_cost"]) == pytest.approx(luar_comm, rel=1e-6)


def test_benchmark_script_wraps_the_command(capsys):
    path = Path(__file__).parents[2] / "benchmarks" / "compare_methods.py"
    spec = importlib.util.spec_from_file_location("compare_methods_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as info:
        module.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--methods" in out and "--num-recycled-layers" in out and "compare_results" in out
