"""The per-layer plots: what they draw is the data they were given, and bad input is named."""

from __future__ import annotations

import types

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_luar.plotting import plot_aggregation_counts, plot_recycling_timeline  # noqa: E402

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
