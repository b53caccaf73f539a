"""The FEMNIST CNN of the FedLUAR paper."""

from __future__ import annotations

import tensorflow as tf

from keras_luar.models._common import check_int, l2, logits_model


def femnist_cnn(num_classes: int = 62, weight_decay: float = 1e-4) -> tf.keras.Model:
    """The two-layer CNN for 28x28 FEMNIST characters used by the FedLUAR paper; returns logits.

    The layers are those of the official FedLUAR `cnn` model (the LEAF CNN):
    a 5x5 convolution with 32 filters, 2x2 max pooling, a 5x5 convolution with
    64 filters, 2x2 max pooling, a dense layer of 2048 units and the logits.
    Convolutions use ``"same"`` padding, every hidden layer ReLU, so the
    flattened features are 7 x 7 x 64 = 3136.

    4 recycling candidates (the four kernels). 6,603,710 parameters for
    62 classes: 832 + 51,264 + 6,424,576 (3136 x 2048 + 2048) + 127,038.

    Weight decay: L2 regularizers on the four kernels. The official code builds
    this model without regularizers (its ``weight_decay`` setting is not used
    for FEMNIST), so ``weight_decay=0`` gives exactly the official model;
    the default is the paper's 1e-4.

    Args:
      num_classes: Number of output logits (62: digits, upper and lower case).
      weight_decay: L2 coefficient of the kernels; 0 adds no regularizers.

    Returns:
      An uncompiled functional `tf.keras.Model` mapping ``(batch, 28, 28, 1)``
      float images to ``(batch, num_classes)`` logits.

    Raises:
      TypeError: If `num_classes` is not an int or `weight_decay` not a number.
      ValueError: If `num_classes` < 1 or `weight_decay` < 0.

    Examples:
      The paper's model has about 6.6 million parameters; with `only_digits`
      data it has 10 outputs:

      >>> femnist_cnn().count_params()
      6603710
      >>> femnist_cnn(num_classes=10).output_shape
      (None, 10)

    References:
      Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018 (the CNN).
      Kim, Kang, Lee, "Layer-wise Update Aggregation with Recycling for
      Communication-Efficient Federated Learning", 2025.
    """
    num_classes = check_int("num_classes", num_classes, 1)
    reg = l2(weight_decay)
    layers = tf.keras.layers
    x_in = tf.keras.Input((28, 28, 1), name="input")
    x = layers.Conv2D(
        32, 5, padding="same", activation="relu", kernel_regularizer=reg, name="conv1"
    )(x_in)
    x = layers.MaxPooling2D(2, strides=2, name="pool1")(x)
    x = layers.Conv2D(
        64, 5, padding="same", activation="relu", kernel_regularizer=reg, name="conv2"
    )(x)
    x = layers.MaxPooling2D(2, strides=2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(2048, activation="relu", kernel_regularizer=reg, name="dense")(x)
    return logits_model(x_in, x, num_classes, "femnist_cnn", kernel_regularizer=reg)
