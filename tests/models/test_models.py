"""The reference models: candidates, parameter counts, logits, weight decay, cloning for TFF.

Expected counts are computed here from the layer shapes (or, for ResNet-20,
are the paper's numbers), never read back from the models.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras_luar  # noqa: F401  (sets up TF logging and TFF's worker before TFF is used)
from keras_luar import models
from keras_luar.layers import describe_model

# --- parameter counts by hand ---------------------------------------------------------------


def conv_params(size, c_in, c_out, bias=True):
    return size * size * c_in * c_out + (c_out if bias else 0)


def dense_params(n_in, n_out):
    return n_in * n_out + n_out


def residual_counts(widths, blocks, num_classes, stem=16, channels=3):
    """(number of kernels, kernel params, BatchNorm channels) of the official residual net."""
    kernels, kernel_params, bn_channels = 1, conv_params(3, channels, stem, False), stem
    c_in = stem
    for width in widths:
        for b in range(blocks):
            kernels += 2
            kernel_params += conv_params(3, c_in, width, False) + conv_params(
                3, width, width, False
            )
            bn_channels += 2 * width
            # The first block of every stage has a 1x1 projection shortcut (stage 1
            # although it keeps the shape, the others because they stride and widen).
            if b == 0:
                kernels += 1
                kernel_params += conv_params(1, c_in, width, False)
                bn_channels += width
            c_in = width
    kernels += 1
    kernel_params += c_in * num_classes
    return kernels, kernel_params, bn_channels


def transformer_params(vocab, length, dim, ff, blocks, classes):
    attention = 4 * (dim * dim + dim)  # query, key, value, output: kernels and biases
    block = attention + 2 * (2 * dim) + dense_params(dim, ff) + dense_params(ff, dim)
    return (
        vocab * dim
        + length * dim
        + blocks * block
        + dense_params(dim, ff)
        + dense_params(ff, classes)
    )


def lstm_params(n_in, units):
    return 4 * units * (n_in + units + 1)


def char_rnn_params(vocab, embed, units, layers):
    total = vocab * embed + lstm_params(embed, units)
    total += (layers - 1) * lstm_params(units, units)
    return total + dense_params(units, vocab)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wrn():
    # WRN-28-10 has 36.5M parameters: build it once for the whole module.
    tf.keras.utils.set_random_seed(0)
    return models.wrn28_10()


SMALL_TEXT = dict(vocabulary_size=50, sequence_length=12, num_classes=4, embed_dim=16,
                  num_heads=2, ff_dim=24, num_blocks=1)  # fmt: skip
SMALL_CHAR = dict(vocabulary_size=20, sequence_length=10, embed_dim=4, units=8, num_layers=2)


def build(name, **kwargs):
    tf.keras.utils.set_random_seed(0)
    return getattr(models, name)(**kwargs)


def example_batch(model, batch=2, seed=0):
    """Inputs for `model`: images in [0, 1) or token ids >= 1, and matching int labels."""
    rng = np.random.default_rng(seed)
    spec = model.inputs[0]
    shape = (batch, *spec.shape[1:])
    out_shape = model.output_shape
    if spec.dtype == tf.int32:
        vocab = model.layers[1].input_dim
        x = rng.integers(1, vocab, size=shape).astype(np.int32)
    else:
        x = rng.random(shape, dtype=np.float32)
    y = rng.integers(0, out_shape[-1], size=(batch, *out_shape[1:-1])).astype(np.int32)
    return x, y


# --- candidates and parameter counts ---------------------------------------------------------


def test_femnist_cnn_counts():
    model = build("femnist_cnn")
    layout = describe_model(model)
    expected = (
        conv_params(5, 1, 32)
        + conv_params(5, 32, 64)
        + dense_params(7 * 7 * 64, 2048)
        + dense_params(2048, 62)
    )
    assert layout.num_candidates == 4
    assert model.count_params() == layout.trainable_size == expected == 6_603_710
    assert model.output_shape == (None, 62)


def test_resnet20_matches_the_paper_counts():
    model = build("resnet20")
    layout = describe_model(model)
    kernels, kernel_params, bn_channels = residual_counts((16, 32, 64), 3, 10)
    assert (kernels, kernel_params) == (23, 271_152)  # the hand count agrees with the paper
    assert layout.num_candidates == 23
    assert sum(layout.candidate_sizes) == 271_152
    # The paper's 272,762 counts trainable parameters (the official code sums
    # model.trainable_variables): kernels, BatchNorm gamma/beta and the logits bias.
    assert layout.trainable_size == kernel_params + 2 * bn_channels + 10 == 272_762
    # count_params() adds BatchNorm's moving mean and variance.
    assert model.count_params() == 272_762 + 2 * bn_channels == 274_362
    assert model.output_shape == (None, 10)


def test_wrn28_10_counts(wrn):
    layout = describe_model(wrn)
    kernels, kernel_params, bn_channels = residual_counts((160, 320, 640), 4, 100)
    assert kernels == 29
    assert layout.num_candidates == 29
    assert sum(layout.candidate_sizes) == kernel_params
    assert layout.trainable_size == kernel_params + 2 * bn_channels + 100
    assert wrn.count_params() == kernel_params + 4 * bn_channels + 100
    assert wrn.output_shape == (None, 100)
    # The official dropout between the two convolutions of each of the 12 blocks.
    dropouts = [layer for layer in wrn.layers if isinstance(layer, tf.keras.layers.Dropout)]
    assert [d.rate for d in dropouts] == [0.3] * 12


@pytest.mark.parametrize(
    "kwargs",
    [{}, SMALL_TEXT, dict(SMALL_TEXT, num_blocks=3)],
    ids=["default", "small", "three_blocks"],
)
def test_text_classifier_counts(kwargs):
    model = build("text_classifier", **kwargs)
    config = dict(vocabulary_size=20000, sequence_length=128, num_classes=4, embed_dim=128,
                  num_heads=4, ff_dim=256, num_blocks=2) | kwargs  # fmt: skip
    # Token and position tables; per block query/key/value/output kernels, the
    # query/key/value biases (Keras keeps them as (heads, head size) matrices)
    # and the two feed-forward kernels; the head and logits kernels.
    assert describe_model(model).num_candidates == 2 + 9 * config["num_blocks"] + 2
    expected = transformer_params(
        config["vocabulary_size"],
        config["sequence_length"],
        config["embed_dim"],
        config["ff_dim"],
        config["num_blocks"],
        config["num_classes"],
    )
    assert model.count_params() == describe_model(model).trainable_size == expected
    assert model.output_shape == (None, config["num_classes"])
    if not kwargs:
        assert expected == 2_875_396  # the number quoted in the docstrings


@pytest.mark.parametrize(
    "kwargs", [{}, SMALL_CHAR, dict(SMALL_CHAR, num_layers=3)], ids=["default", "small", "three"]
)
def test_char_rnn_counts(kwargs):
    model = build("char_rnn", **kwargs)
    config = dict(vocabulary_size=90, sequence_length=80, embed_dim=8, units=256, num_layers=2)
    config |= kwargs
    v, length = config["vocabulary_size"], config["sequence_length"]
    assert describe_model(model).num_candidates == 1 + 2 * config["num_layers"] + 1
    expected = char_rnn_params(v, config["embed_dim"], config["units"], config["num_layers"])
    assert model.count_params() == expected
    assert model.output_shape == (None, length, v)
    if not kwargs:
        assert expected == 820_522


# --- architecture details of the residual networks -------------------------------------------


@pytest.mark.parametrize("name", ["resnet20", "wrn28_10"])
def test_first_block_has_a_1x1_projection(name, wrn):
    model = wrn if name == "wrn28_10" else build(name)
    first_width = 16 if name == "resnet20" else 160
    convs = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    stem, first_block_conv = convs[0], convs[1]
    assert stem.input is model.input
    ones = [c for c in convs if c.kernel_size == (1, 1)]
    # One projection per stage: stride 1 in stage 1, stride 2 in stages 2 and 3.
    assert [c.strides for c in ones] == [(1, 1), (2, 2), (2, 2)]
    projection = ones[0]
    assert projection.input is first_block_conv.input  # both read the stem's output
    assert tuple(projection.kernel.shape) == (1, 1, 16, first_width)
    assert not projection.use_bias


@pytest.mark.parametrize("name, epsilon", [("resnet20", 1e-3), ("wrn28_10", 1e-5)])
def test_batch_norm_settings(name, epsilon, wrn):
    model = wrn if name == "wrn28_10" else build(name)
    norms = [
        layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)
    ]
    assert all(n.momentum == 0.99 and n.epsilon == epsilon for n in norms)
    # The second BatchNorm of each of the 9 (12) blocks starts at gamma = 0.
    blocks = 9 if name == "resnet20" else 12
    zero_gamma = [n for n in norms if not np.any(n.gamma.numpy())]
    assert len(zero_gamma) == blocks
    assert len(norms) == 1 + 2 * blocks + 3


# --- logits ----------------------------------------------------------------------------------


def cheap_model(name):
    """The model `name` at a size that runs in milliseconds (WRN-28-10 is the `wrn` fixture)."""
    kwargs = {"text_classifier": SMALL_TEXT, "char_rnn": SMALL_CHAR}.get(name, {})
    return build(name, **kwargs)


ALL = ["femnist_cnn", "resnet20", "wrn28_10", "text_classifier", "char_rnn"]


@pytest.mark.parametrize("name", ALL)
def test_outputs_are_logits(name, wrn):
    model = wrn if name == "wrn28_10" else cheap_model(name)
    last = model.layers[-1]
    assert isinstance(last, tf.keras.layers.Dense)
    assert last.activation is tf.keras.activations.linear
    assert not any(isinstance(layer, tf.keras.layers.Softmax) for layer in model.layers)
    x, _ = example_batch(model, batch=1 if name == "wrn28_10" else 3)
    # The output is the last layer's affine map of its input, computed here by hand.
    features = tf.keras.Model(model.inputs, last.input)(x, training=False).numpy()
    out = model(x, training=False).numpy()
    expected = features @ last.kernel.numpy() + last.bias.numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(out.sum(axis=-1) - 1.0) > 1e-3)  # not probabilities


# --- weight decay ----------------------------------------------------------------------------


def squares(*tensors):
    return sum(float(np.sum(np.square(t.numpy()))) for t in tensors)


@pytest.mark.parametrize("name", ["femnist_cnn", "resnet20", "wrn28_10"])
def test_image_models_regularize_kernels(name, wrn):
    wd = {"femnist_cnn": 1e-4, "resnet20": 1e-4, "wrn28_10": 5e-4}[name]
    model = wrn if name == "wrn28_10" else build(name)
    kernels = [v for v in model.trainable_variables if len(v.shape) >= 2]
    logits_bias = model.layers[-1].bias
    # FEMNIST: the four kernels. ResNets: every kernel and the logits bias (official).
    regularized = kernels if name == "femnist_cnn" else [*kernels, logits_bias]
    assert len(model.losses) == len(regularized)
    initial_bias = logits_bias.numpy()
    logits_bias.assign(tf.fill(logits_bias.shape, 0.5))  # a non-zero bias is visible in the sum
    total, expected = float(tf.add_n(model.losses)), wd * squares(*regularized)
    logits_bias.assign(initial_bias)
    np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_text_classifier_regularizes_the_head_kernel():
    model = build("text_classifier", **SMALL_TEXT, weight_decay=1e-3)
    head = model.layers[-2]
    assert isinstance(head, tf.keras.layers.Dense) and head.units == SMALL_TEXT["ff_dim"]
    assert len(model.losses) == 1
    np.testing.assert_allclose(float(model.losses[0]), 1e-3 * squares(head.kernel), rtol=1e-5)


def test_char_rnn_regularizes_only_when_asked():
    assert build("char_rnn", **SMALL_CHAR).losses == []
    model = build("char_rnn", **SMALL_CHAR, weight_decay=1e-3)
    lstms = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.LSTM)]
    regularized = [w for lstm in lstms for w in (lstm.cell.kernel, lstm.cell.recurrent_kernel)]
    regularized.append(model.layers[-1].kernel)
    assert len(model.losses) == 2 * SMALL_CHAR["num_layers"] + 1
    np.testing.assert_allclose(
        float(tf.add_n(model.losses)), 1e-3 * squares(*regularized), rtol=1e-5
    )


@pytest.mark.parametrize("name", ["femnist_cnn", "resnet20", "text_classifier"])
def test_zero_weight_decay_adds_no_losses(name):
    kwargs = SMALL_TEXT if name == "text_classifier" else {}
    assert build(name, **kwargs, weight_decay=0.0).losses == []


# --- cloning and TFF -------------------------------------------------------------------------


# TFF warns that it does not update BatchNorm statistics; keras_luar aggregates them itself.
BN_WARNING = "ignore:Batch Normalization contains non-trainable variables"


@pytest.mark.filterwarnings(BN_WARNING)
@pytest.mark.parametrize("name", ["femnist_cnn", "resnet20", "text_classifier", "char_rnn"])
def test_clone_and_tff_forward_pass(name):
    import tensorflow_federated as tff

    model = cheap_model(name)
    clone = tf.keras.models.clone_model(model)
    assert [v.shape for v in clone.weights] == [v.shape for v in model.weights]
    clone.set_weights(model.get_weights())
    x, y = example_batch(model)
    np.testing.assert_allclose(
        clone(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-5, atol=1e-6
    )

    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    tff_model = tff.learning.models.from_keras_model(
        clone,
        loss=loss,
        input_spec=(
            tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
            tf.TensorSpec((None, *y.shape[1:]), tf.int32),
        ),
    )
    assert len(tff_model.trainable_variables) == len(model.trainable_variables)
    # TFF's loss is the data loss plus the models' regularization losses.
    output = tff_model.forward_pass((x, y), training=False)
    logits = model(x, training=False)
    expected = float(loss(y, logits)) + sum(float(r) for r in model.losses)
    np.testing.assert_allclose(float(output.loss), expected, rtol=1e-5)


@pytest.mark.filterwarnings(BN_WARNING)
def test_wrn_clones_for_tff(wrn):
    import tensorflow_federated as tff

    clone = tf.keras.models.clone_model(wrn)
    assert describe_model(clone).candidate_sizes == describe_model(wrn).candidate_sizes
    tff_model = tff.learning.models.from_keras_model(
        clone,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=(tf.TensorSpec((None, 32, 32, 3)), tf.TensorSpec((None,), tf.int32)),
    )
    assert len(tff_model.trainable_variables) == len(wrn.trainable_variables)


# --- details of the sequence models ----------------------------------------------------------


def test_position_embedding_adds_the_table():
    layer = models.PositionEmbedding(5)
    x = tf.random.stateless_normal((2, 3, 4), seed=(1, 2))
    out = layer(x).numpy()
    np.testing.assert_allclose(out, x.numpy() + layer.embeddings.numpy()[None, :3], rtol=1e-6)
    assert models.PositionEmbedding.from_config(layer.get_config()).sequence_length == 5


def test_char_rnn_masks_padding():
    model = build("char_rnn", **SMALL_CHAR)
    x = np.array([[3, 4, 5, 0, 0, 0, 0, 0, 0, 0]], np.int32)
    out = model(x)
    np.testing.assert_array_equal(out._keras_mask.numpy(), x != 0)
    unmasked = build("char_rnn", **SMALL_CHAR, mask_zero=False)
    assert getattr(unmasked(x), "_keras_mask", None) is None


# --- argument validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (lambda: models.femnist_cnn(num_classes=0), ValueError, "num_classes"),
        (lambda: models.femnist_cnn(weight_decay=-1e-4), ValueError, "weight_decay"),
        (lambda: models.resnet20(weight_decay="1e-4"), TypeError, "weight_decay"),
        (lambda: models.resnet20(input_shape=(32, 32, 1)), ValueError, "input_shape"),
        (lambda: models.wrn28_10(dropout=1.0), ValueError, "dropout"),
        (lambda: models.text_classifier(embed_dim=10, num_heads=4), ValueError, "num_heads"),
        (lambda: models.text_classifier(vocabulary_size=2.5), TypeError, "vocabulary_size"),
        (lambda: models.char_rnn(sequence_length=0), ValueError, "sequence_length"),
        (lambda: models.char_rnn(mask_zero=1), TypeError, "mask_zero"),
    ],
)
def test_invalid_arguments(call, error, argument):
    with pytest.raises(error, match=f"Invalid value for argument `{argument}`"):
        call()
