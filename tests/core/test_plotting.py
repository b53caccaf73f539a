"""The plots: what they draw is the data they were given, readably, and bad input is named."""

from __future__ import annotations

import colorsys
import itertools
import types

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from keras_luar.plotting import (  # noqa: E402
    plot_accuracy_vs_communication,
    plot_aggregation_counts,
    plot_recycling_timeline,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


COUNTS = {
    "FedAvg": {"conv/kernel": 30.0, "conv/bias": 30.0, "dense/kernel": 30.0, "out/kernel": 30.0},
    "FedLUAR": {"conv/kernel": 24.0, "conv/bias": 30.0, "dense/kernel": 9.0, "out/kernel": 18.0},
}


def _bars(fig):
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    heights = {}
    for container, (method, _) in zip(ax.containers, COUNTS.items(), strict=True):
        heights[method] = [bar.get_height() for bar in container]
    return labels, heights


def test_aggregation_counts_draw_one_bar_per_candidate_and_method():
    labels, heights = _bars(plot_aggregation_counts(COUNTS))
    assert labels == ["conv/kernel", "dense/kernel", "out/kernel"]  # biases are always sent
    assert heights == {m: [c[n] for n in labels] for m, c in COUNTS.items()}
    labels, heights = _bars(plot_aggregation_counts(COUNTS, candidates_only=False))
    assert labels == list(COUNTS["FedAvg"])
    assert heights["FedLUAR"] == [24.0, 30.0, 9.0, 18.0]


def test_aggregation_counts_read_a_trainer_and_its_candidates():
    layout = types.SimpleNamespace(candidate_names=("dense/kernel",))
    trainer = types.SimpleNamespace(aggregation_counts=COUNTS["FedLUAR"], layout=layout)
    fig = plot_aggregation_counts({"FedAvg": COUNTS["FedAvg"], "FedLUAR": trainer})
    labels, heights = _bars(fig)
    assert labels == ["dense/kernel"]
    assert heights == {"FedAvg": [30.0], "FedLUAR": [9.0]}


def test_aggregation_counts_reject_bad_input():
    with pytest.raises(ValueError, match="at least one method"):
        plot_aggregation_counts({})
    with pytest.raises(TypeError, match="FedLUAR"):
        plot_aggregation_counts({"FedLUAR": [1, 2]})
    with pytest.raises(ValueError, match="same variables"):
        plot_aggregation_counts({"FedAvg": COUNTS["FedAvg"], "FedLUAR": {"conv/kernel": 1.0}})


def test_recycling_timeline_shows_the_scores_and_marks_recycled_cells():
    scores = [[0.2, 0.01, 0.5], [0.2, 0.03, 0.4], [0.1, 0.03, 0.4], [0.3, 0.02, 0.6]]
    recycled = [[], ["out/kernel"], ["conv/kernel", "out/kernel"], ["d/kernel"]]
    names = ["conv/kernel", "d/kernel", "out/kernel"]
    fig = plot_recycling_timeline(
        {"layer_scores": scores, "recycled_layers": recycled}, layer_names=names
    )
    ax = fig.axes[0]
    image = ax.get_images()[0]
    np.testing.assert_allclose(np.asarray(image.get_array()), np.asarray(scores).T)
    marks = {tuple(p) for p in ax.collections[-1].get_offsets().tolist()}
    assert marks == {(1.0, 2.0), (2.0, 0.0), (2.0, 2.0), (3.0, 1.0)}  # (round, layer row)
    assert [t.get_text() for t in ax.get_yticklabels()] == names


def test_recycling_timeline_rejects_bad_input():
    with pytest.raises(ValueError, match="layer_scores"):
        plot_recycling_timeline({"recycled_layers": [[]]}, layer_names=["a"])
    with pytest.raises(ValueError, match="one name per score"):
        plot_recycling_timeline(
            {"layer_scores": [[0.1, 0.2]], "recycled_layers": [[]]}, layer_names=["a"]
        )


def test_aggregation_counts_keep_colours_distinct_past_ten_methods():
    counts = {f"m{i}": {"a/kernel": float(i), "b/kernel": 1.0} for i in range(12)}
    ax = plot_aggregation_counts(counts).axes[0]
    colours = {tuple(container.patches[0].get_facecolor()) for container in ax.containers}
    assert len(colours) == 12


def _hue_distance(a, b) -> float:
    """Degrees between two colours' hues: two shades of one hue are 0 to ~10 apart."""
    ha, hb = (colorsys.rgb_to_hsv(*to_rgb(c))[0] for c in (a, b))
    d = abs(ha - hb) % 1.0
    return 360.0 * min(d, 1.0 - d)


def _comparison_labels() -> list[str]:
    from keras_luar.compare import DEFAULT_METHODS, parse_method_spec

    labels = [parse_method_spec(m).label for m in DEFAULT_METHODS]
    assert labels[:2] == ["FedAvg", "FedLUAR"] and len(labels) == 11
    return labels


def _histories(labels):
    return {
        label: {
            "val_accuracy": [0.2, 0.5 + k / 100, 0.7 + k / 100],
            "comm_cost": [1.0, 0.9, 0.8],
            "upload_bytes": [100.0, 80.0, 60.0],
        }
        for k, label in enumerate(labels)
    }


def test_accuracy_plot_of_the_comparison_tells_the_methods_apart():
    labels = _comparison_labels()
    lines = plot_accuracy_vs_communication(_histories(labels)).axes[0].get_lines()
    assert [line.get_label() for line in lines] == labels
    colour = {line.get_label(): to_rgb(line.get_color()) for line in lines}
    style = {line.get_label(): line.get_linestyle() for line in lines}
    # FedAvg and FedLUAR are the pair everyone compares first: different hues, not two blues.
    assert _hue_distance(colour["FedAvg"], colour["FedLUAR"]) > 60
    # Every method without LUAR on top has a colour of its own, drawn solid; X+LUAR is X's
    # colour, dashed.
    plain = [n for n in labels if "+LUAR" not in n]
    assert len({colour[n] for n in plain}) == len(plain)
    assert all(style[n] == "-" for n in plain)
    for name in (n for n in labels if "+LUAR" in n):
        base = name.replace("+LUAR", "")
        assert colour[name] == colour[base] and style[name] == "--", name
    assert (
        min(
            np.linalg.norm(np.subtract(colour[a], colour[b]))
            for a, b in itertools.combinations(plain, 2)
        )
        > 0.1
    )


def test_accuracy_plot_puts_the_legend_beside_the_axes():
    fig = plot_accuracy_vs_communication(_histories(_comparison_labels()))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)
    assert legend.x0 >= axes.x1  # right of the axes, so it covers no curve
    assert legend.x1 <= fig.bbox.x1 and legend.y0 >= fig.bbox.y0  # and not cut off
    assert len(ax.get_legend().get_texts()) == 11


def test_accuracy_plot_labels_the_y_axis_by_its_metric():
    histories = {
        "FedAvg": {
            "val_accuracy": [0.5, 0.8],
            "val_loss": [1.0, 0.5],
            "accuracy": [0.6, 0.9],
            "comm_cost": [1.0, 1.0],
        }
    }
    ax = plot_accuracy_vs_communication(histories).axes[0]
    # val_ entries are measured on `validation_data`, the test split in the comparisons.
    assert ax.get_ylabel() == "Held-out accuracy"
    assert ax.get_title() == "Held-out accuracy vs. communication"
    ax = plot_accuracy_vs_communication(histories, metric="val_loss").axes[0]
    assert ax.get_ylabel() == "Held-out loss"
    ax = plot_accuracy_vs_communication(histories, metric="accuracy").axes[0]
    assert ax.get_ylabel() == "Accuracy"
    ax = plot_accuracy_vs_communication(histories, ylabel="Test accuracy").axes[0]
    assert ax.get_ylabel() == "Test accuracy"
    assert ax.get_title() == "Test accuracy vs. communication"


def test_aggregation_counts_of_the_comparison_give_fedavg_and_fedluar_different_hues():
    labels = _comparison_labels()
    counts = {label: {"a/kernel": 1.0 + k, "b/kernel": 2.0} for k, label in enumerate(labels)}
    ax = plot_aggregation_counts(counts).axes[0]
    colour = dict(zip(labels, (c.patches[0].get_facecolor() for c in ax.containers), strict=True))
    assert _hue_distance(colour["FedAvg"], colour["FedLUAR"]) > 60
