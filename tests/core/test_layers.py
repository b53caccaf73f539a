"""Tests for `keras_luar.layers`: which variables are recycling candidates.

Expected values are derived by hand from each model's layer configuration
(kernel shape = fan-in x units, etc.), never copied from the code's output.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import layers
from keras_luar.layers import describe_model, describe_weights_type

# ---------------------------------------------------------------------------
# Model builders. Every layer has an explicit name so variable names are
# deterministic ("<layer>/<weight>").
# ---------------------------------------------------------------------------

DENSE_IN, DENSE_HIDDEN, DENSE_OUT = 4, 8, 3


def dense_model() -> tf.keras.Model:
    return tf.keras.Sequential(
        [
            tf.keras.Input((DENSE_IN,)),
            tf.keras.layers.Dense(DENSE_HIDDEN, activation="relu", name="h1"),
            tf.keras.layers.Dense(DENSE_OUT, name="out"),
        ]
    )


IMG, CH, F1, F2, K, CLASSES = 8, 3, 4, 5, 3, 2


def conv_bn_model() -> tf.keras.Model:
    inp = tf.keras.Input((IMG, IMG, CH))
    x = tf.keras.layers.Conv2D(F1, K, name="conv1")(inp)
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.Conv2D(F2, K, use_bias=False, name="conv2")(x)
    x = tf.keras.layers.Flatten()(x)
    out = tf.keras.layers.Dense(CLASSES, name="head")(x)
    return tf.keras.Model(inp, out)


SEQ_LEN, VOCAB, EMB, UNITS = 7, 20, 6, 5


def rnn_model(cell: str = "lstm") -> tf.keras.Model:
    rnn_layer = (
        tf.keras.layers.LSTM(UNITS, name="rnn")
        if cell == "lstm"
        else tf.keras.layers.SimpleRNN(UNITS, name="rnn")
    )
    return tf.keras.Sequential(
        [
            tf.keras.Input((SEQ_LEN,), dtype="int32"),
            tf.keras.layers.Embedding(VOCAB, EMB, name="emb"),
            rnn_layer,
            tf.keras.layers.Dense(CLASSES, name="out"),
        ]
    )


def frozen_model() -> tf.keras.Model:
    return tf.keras.Sequential(
        [
            tf.keras.Input((DENSE_IN,)),
            tf.keras.layers.Dense(DENSE_HIDDEN, name="frozen", trainable=False),
            tf.keras.layers.Dense(DENSE_OUT, name="out"),
        ]
    )


def _input_spec(model: tf.keras.Model):
    x_spec = tf.TensorSpec([None, *model.input_shape[1:]], model.inputs[0].dtype)
    return (x_spec, tf.TensorSpec([None], tf.int32))


def _tff_model_fn(builder):
    def model_fn():
        keras_model = builder()
        return tff.learning.models.from_keras_model(
            keras_model,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=_input_spec(keras_model),
        )

    return model_fn


# ---------------------------------------------------------------------------
# Sequential dense model.
# ---------------------------------------------------------------------------


def test_dense_candidates_are_the_kernels():
    layout = describe_model(dense_model())
    expected = [
        ("h1/kernel", (DENSE_IN, DENSE_HIDDEN), "candidate"),
        ("h1/bias", (DENSE_HIDDEN,), "always_sent"),
        ("out/kernel", (DENSE_HIDDEN, DENSE_OUT), "candidate"),
        ("out/bias", (DENSE_OUT,), "always_sent"),
    ]
    assert [(v.name, v.shape, v.role) for v in layout.trainable] == expected
    assert layout.non_trainable == ()
    assert [v.index for v in layout.trainable] == [0, 1, 2, 3]
    assert all(v.trainable and v.dtype == "float32" for v in layout.trainable)

    assert layout.candidate_names == ("h1/kernel", "out/kernel")
    assert layout.candidate_indices == (0, 2)
    assert layout.num_candidates == 2
    assert [v.name for v in layout.always_sent] == ["h1/bias", "out/bias"]

    k1, k2 = DENSE_IN * DENSE_HIDDEN, DENSE_HIDDEN * DENSE_OUT
    assert layout.candidate_sizes == (k1, k2) == (32, 24)
    assert [v.size for v in layout.trainable] == [k1, DENSE_HIDDEN, k2, DENSE_OUT]
    total = k1 + DENSE_HIDDEN + k2 + DENSE_OUT
    assert total == 67
    assert layout.trainable_size == total == dense_model().count_params()
    assert layout.trainable_bytes == 4 * total
    assert [v.nbytes for v in layout.trainable] == [4 * k1, 4 * DENSE_HIDDEN, 4 * k2, 4 * DENSE_OUT]


def test_nbytes_follows_the_variable_dtype():
    model = tf.keras.Sequential(
        [
            tf.keras.Input((DENSE_IN,)),
            tf.keras.layers.Dense(DENSE_HIDDEN, name="f32"),
            tf.keras.layers.Dense(DENSE_OUT, name="f64", dtype="float64"),
        ]
    )
    layout = describe_model(model)
    by_name = {v.name: v for v in layout.trainable}
    assert by_name["f64/kernel"].dtype == "float64"
    assert by_name["f64/kernel"].nbytes == 8 * DENSE_HIDDEN * DENSE_OUT
    assert by_name["f32/kernel"].nbytes == 4 * DENSE_IN * DENSE_HIDDEN
    assert layout.trainable_bytes == 4 * (DENSE_IN * DENSE_HIDDEN + DENSE_HIDDEN) + 8 * (
        DENSE_HIDDEN * DENSE_OUT + DENSE_OUT
    )


def test_is_candidate_rule():
    assert layers.is_candidate((3, 2), tf.float32, True)
    assert layers.is_candidate((3, 3, 2, 4), "float16", True)
    assert not layers.is_candidate((3, 2), tf.float32, False)  # frozen
    assert not layers.is_candidate((3,), tf.float32, True)  # bias
    assert not layers.is_candidate((), tf.float32, True)  # scalar
    assert not layers.is_candidate((3, 2), tf.int32, True)  # not floating


# ---------------------------------------------------------------------------
# Conv + BatchNorm + Dense (functional).
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bn_statistics", ["average", "local"])
def test_conv_bn_roles(bn_statistics):
    layout = describe_model(conv_bn_model(), bn_statistics=bn_statistics)
    assert layout.bn_statistics == bn_statistics

    out1 = IMG - K + 1  # "valid" padding
    out2 = out1 - K + 1
    flat = out2 * out2 * F2
    expected_trainable = [
        ("conv1/kernel", (K, K, CH, F1), "candidate"),
        ("conv1/bias", (F1,), "always_sent"),
        ("bn/gamma", (F1,), "always_sent"),
        ("bn/beta", (F1,), "always_sent"),
        ("conv2/kernel", (K, K, F1, F2), "candidate"),
        ("head/kernel", (flat, CLASSES), "candidate"),
        ("head/bias", (CLASSES,), "always_sent"),
    ]
    assert [(v.name, v.shape, v.role) for v in layout.trainable] == expected_trainable
    assert layout.candidate_names == ("conv1/kernel", "conv2/kernel", "head/kernel")
    assert layout.candidate_indices == (0, 4, 5)
    assert layout.candidate_sizes == (K * K * CH * F1, K * K * F1 * F2, flat * CLASSES)
    # BN gamma/beta are never candidates.
    assert not any(v.name.startswith("bn/") for v in layout.candidates)

    nt_role = "averaged" if bn_statistics == "average" else "local"
    assert [(v.name, v.shape, v.trainable, v.role, v.index) for v in layout.non_trainable] == [
        ("bn/moving_mean", (F1,), False, nt_role, 0),
        ("bn/moving_variance", (F1,), False, nt_role, 1),
    ]
    # Non-trainable variables are not uploaded: not in trainable_size.
    assert layout.trainable_size == sum(math.prod(s) for _, s, _ in expected_trainable)


# ---------------------------------------------------------------------------
# Embedding + RNN + Dense.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell,gates", [("lstm", 4), ("simple", 1)])
def test_embedding_rnn_candidates(cell, gates):
    layout = describe_model(rnn_model(cell))
    names = [v.name for v in layout.trainable]
    shapes = {v.name: v.shape for v in layout.trainable}
    roles = {v.name: v.role for v in layout.trainable}

    def find(suffix):
        hits = [n for n in names if n.startswith("rnn/") and n.endswith(suffix)]
        assert len(hits) == 1, (suffix, names)
        return hits[0]

    kernel, recurrent, bias = find("/kernel"), find("/recurrent_kernel"), find("/bias")
    assert shapes["emb/embeddings"] == (VOCAB, EMB)
    assert shapes[kernel] == (EMB, gates * UNITS)
    assert shapes[recurrent] == (UNITS, gates * UNITS)
    assert shapes[bias] == (gates * UNITS,)
    assert roles["emb/embeddings"] == roles[kernel] == roles[recurrent] == "candidate"
    assert roles[bias] == "always_sent"
    assert layout.candidate_names == ("emb/embeddings", kernel, recurrent, "out/kernel")
    assert layout.candidate_sizes == (
        VOCAB * EMB,
        EMB * gates * UNITS,
        UNITS * gates * UNITS,
        UNITS * CLASSES,
    )
    assert bias not in layout.candidate_names


# ---------------------------------------------------------------------------
# Frozen layers.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bn_statistics", ["average", "local"])
def test_frozen_kernel_is_not_a_candidate(bn_statistics):
    layout = describe_model(frozen_model(), bn_statistics=bn_statistics)
    assert layout.candidate_names == ("out/kernel",)
    assert [v.name for v in layout.trainable] == ["out/kernel", "out/bias"]
    nt_role = "averaged" if bn_statistics == "average" else "local"
    assert [(v.name, v.shape, v.trainable, v.role) for v in layout.non_trainable] == [
        ("frozen/kernel", (DENSE_IN, DENSE_HIDDEN), False, nt_role),
        ("frozen/bias", (DENSE_HIDDEN,), False, nt_role),
    ]
    assert layout.trainable_size == DENSE_HIDDEN * DENSE_OUT + DENSE_OUT


# ---------------------------------------------------------------------------
# Agreement with TFF's variable order.
# ---------------------------------------------------------------------------

BUILDERS = {
    "dense": dense_model,
    "conv_bn": conv_bn_model,
    "lstm": rnn_model,
    "frozen": frozen_model,
}


def _shapes(variables):
    return [tuple(int(d) for d in v.shape) for v in variables]


@pytest.mark.parametrize("builder", list(BUILDERS.values()), ids=list(BUILDERS))
def test_order_matches_tff_model_weights(builder):
    keras_model = builder()
    tff_model = tff.learning.models.from_keras_model(
        keras_model,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=_input_spec(keras_model),
    )
    weights = tff.learning.models.ModelWeights.from_model(tff_model)
    layout = describe_model(keras_model)

    assert [v.shape for v in layout.trainable] == _shapes(weights.trainable)
    assert [v.shape for v in layout.non_trainable] == _shapes(weights.non_trainable)
    assert [v.dtype for v in layout.trainable] == [v.dtype.name for v in weights.trainable]
    assert [v.name for v in layout.trainable] == [
        v.name.removesuffix(":0") for v in weights.trainable
    ]

    # The TFF type of those ModelWeights gives the same layout.
    weights_type = tff.learning.models.weights_type_from_model(_tff_model_fn(builder))
    typed = describe_weights_type(weights_type)
    assert typed.candidate_indices == layout.candidate_indices
    assert [v.shape for v in typed.candidates] == [v.shape for v in layout.candidates]
    assert [(v.shape, v.role, v.dtype) for v in typed.trainable] == [
        (v.shape, v.role, v.dtype) for v in layout.trainable
    ]
    assert [(v.shape, v.role) for v in typed.non_trainable] == [
        (v.shape, v.role) for v in layout.non_trainable
    ]
    assert typed.trainable_size == layout.trainable_size
    # Default names for a ModelWeights type.
    assert [v.name for v in typed.trainable] == [
        f"trainable/{i}" for i in range(len(weights.trainable))
    ]
    assert [v.name for v in typed.non_trainable] == [
        f"non_trainable/{i}" for i in range(len(weights.non_trainable))
    ]
    # With the Keras names, the two layouts are identical.
    all_names = [v.name for v in layout.trainable + layout.non_trainable]
    assert describe_weights_type(weights_type, names=all_names) == layout

    # The bare trainable structure (what an aggregation factory receives).
    bare = describe_weights_type(weights_type.trainable)
    assert bare.non_trainable == ()
    assert bare.candidate_indices == layout.candidate_indices
    assert [v.shape for v in bare.trainable] == [v.shape for v in layout.trainable]


# ---------------------------------------------------------------------------
# describe_weights_type on hand-built types.
# ---------------------------------------------------------------------------


def _list_type():
    return tff.types.to_type(
        [(np.float32, (3, 2)), (np.float32, (2,)), (np.float32, (2, 2, 3)), (np.float32, ())]
    )


def test_describe_weights_type_unnamed_list():
    layout = describe_weights_type(_list_type())
    assert [(v.name, v.shape, v.role, v.size) for v in layout.trainable] == [
        ("trainable/0", (3, 2), "candidate", 6),
        ("trainable/1", (2,), "always_sent", 2),
        ("trainable/2", (2, 2, 3), "candidate", 12),
        ("trainable/3", (), "always_sent", 1),
    ]
    assert layout.non_trainable == ()
    assert layout.candidate_indices == (0, 2)
    assert layout.trainable_size == 21
    assert layout.trainable_bytes == 84


def test_describe_weights_type_names():
    layout = describe_weights_type(_list_type(), names=["w", "b", "k", "s"])
    assert [v.name for v in layout.trainable] == ["w", "b", "k", "s"]
    assert layout.candidate_names == ("w", "k")


@pytest.mark.parametrize("names", [["a"], ["a", "b", "c", "d", "e"], []])
def test_describe_weights_type_wrong_number_of_names(names):
    with pytest.raises(ValueError, match="names"):
        describe_weights_type(_list_type(), names=names)


def test_describe_weights_type_model_weights_names_cover_non_trainable():
    weights_type = tff.types.to_type(
        tff.learning.models.ModelWeights(
            trainable=[tff.TensorType(np.float32, [4, 3]), tff.TensorType(np.float32, [3])],
            non_trainable=[tff.TensorType(np.float32, [3])],
        )
    )
    layout = describe_weights_type(weights_type, names=["k", "b", "mean"], bn_statistics="local")
    assert [(v.name, v.role) for v in layout.trainable] == [
        ("k", "candidate"),
        ("b", "always_sent"),
    ]
    assert [(v.name, v.role, v.index) for v in layout.non_trainable] == [("mean", "local", 0)]
    with pytest.raises(ValueError, match="names"):
        describe_weights_type(weights_type, names=["k", "b"])


def test_describe_weights_type_rejects_non_tensors():
    with pytest.raises(TypeError):
        describe_weights_type(tff.SequenceType(tff.TensorType(np.float32, [2, 2])))
    with pytest.raises(TypeError):
        describe_weights_type(
            tff.types.to_type([tff.SequenceType(tff.TensorType(np.float32, [2]))])
        )


def test_describe_weights_type_rejects_unknown_shapes():
    with pytest.raises(TypeError, match="shape"):
        describe_weights_type(tff.types.to_type([(np.float32, (None, 3))]))


def test_duplicate_names_are_made_unique():
    t = tff.types.to_type([(np.float32, (2, 2)), (np.float32, (2, 2)), (np.float32, (2,))])
    names = [v.name for v in describe_weights_type(t, names=["a", "a", "b"]).trainable]
    assert len(set(names)) == 3
    assert names[0] == "a" and names[2] == "b"
    assert names[1].startswith("a") and names[1] != "a"


def test_duplicate_names_stay_unique_when_a_suffix_collides():
    # Whatever suffix the code appends to the second "a", the result must not
    # collide with a real name that already looks like it.
    t = tff.types.to_type([(np.float32, (2, 2))] * 5)
    base = [v.name for v in describe_weights_type(t, names=["a", "a", "x", "y", "z"]).trainable]
    generated = base[1]
    names = [
        v.name
        for v in describe_weights_type(t, names=["a", "a", generated, "a", generated]).trainable
    ]
    assert len(set(names)) == 5, names
    assert names[0] == "a"


# ---------------------------------------------------------------------------
# Argument validation.
# ---------------------------------------------------------------------------


def test_bad_bn_statistics():
    with pytest.raises(ValueError, match="bn_statistics"):
        describe_model(dense_model(), bn_statistics="mean")
    with pytest.raises(ValueError, match="bn_statistics"):
        describe_weights_type(_list_type(), bn_statistics="global")


def test_unbuilt_model():
    model = tf.keras.Sequential([tf.keras.layers.Dense(3, name="d")])
    assert not model.built
    with pytest.raises(ValueError, match="built"):
        describe_model(model)
    model(tf.zeros([1, 5]))  # building it makes it describable
    assert describe_model(model).candidate_names == ("d/kernel",)
    assert describe_model(model).candidate_sizes == (5 * 3,)


def test_not_a_model():
    with pytest.raises(TypeError, match="model"):
        describe_model(tf.keras.layers.Dense(3))
    with pytest.raises(TypeError, match="model"):
        describe_model("model")


# ---------------------------------------------------------------------------
# summary().
# ---------------------------------------------------------------------------


def test_summary_mentions_every_variable_and_the_candidate_count():
    layout = describe_model(conv_bn_model())
    text = layout.summary()
    for v in layout.trainable + layout.non_trainable:
        assert re.search(rf"^{re.escape(v.name)}\s", text, re.MULTILINE), v.name
    assert len(layout.trainable + layout.non_trainable) == 9
    assert re.search(r"\b3 candidates\b", text)
    assert "averaged" in text and "candidate" in text and "always_sent" in text
    local = describe_model(conv_bn_model(), bn_statistics="local").summary()
    assert "local" in local and "averaged" not in local
