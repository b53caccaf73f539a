"""The CIFAR residual networks of the FedLUAR paper: ResNet-20 and WRN-28-10.

Both follow the official FedLUAR code block for block, which differs from the
original papers in two ways worth knowing:

* Blocks are post-activation (conv, BatchNorm, ReLU, conv, BatchNorm, add,
  ReLU), also in the wide network, where Zagoruyko & Komodakis use
  pre-activation blocks. The second BatchNorm of every block starts with
  gamma = 0, so each block starts as the identity.
* Shortcuts that change shape use a 1x1 convolution and BatchNorm (He et al.'s
  option B), and so does the first block of the first stage although its shape
  does not change (the official code passes ``projection=True`` there). The
  CIFAR ResNet of He et al. uses parameter-free shortcuts instead.

Parameter counts: the official code counts trainable parameters (its upload
accounting sums ``model.trainable_variables``); `model.count_params()` adds
BatchNorm's moving mean and variance, which are not trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from keras_luar.models._common import (
    check_image_shape,
    check_int,
    check_rate,
    check_weight_decay,
    l2,
    logits_model,
)


def _residual_network(
    name: str,
    *,
    widths: Sequence[int],
    blocks_per_stage: int,
    num_classes: int,
    weight_decay: float,
    bn_momentum: float,
    bn_epsilon: float,
    dropout: float,
    input_shape: tuple[int | None, int | None, int],
) -> tf.keras.Model:
    """Builds the official FedLUAR residual network (shared by ResNet-20 and WRN-28-10)."""
    layers = tf.keras.layers
    reg = l2(weight_decay)

    def conv(filters, size, strides, layer_name):
        return layers.Conv2D(
            filters,
            size,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_regularizer=reg,
            name=layer_name,
        )

    def batch_norm(layer_name, gamma_initializer="ones"):
        return layers.BatchNormalization(
            momentum=bn_momentum,
            epsilon=bn_epsilon,
            gamma_initializer=gamma_initializer,
            name=layer_name,
        )

    def block(x, filters, strides, projection, prefix):
        y = conv(filters, 3, strides, f"{prefix}_conv1")(x)
        y = batch_norm(f"{prefix}_bn1")(y)
        y = layers.ReLU(name=f"{prefix}_relu1")(y)
        if dropout > 0:
            y = layers.Dropout(dropout, name=f"{prefix}_dropout")(y)
        y = conv(filters, 3, 1, f"{prefix}_conv2")(y)
        y = batch_norm(f"{prefix}_bn2", gamma_initializer="zeros")(y)
        shortcut = x
        if projection or strides != 1:
            shortcut = conv(filters, 1, strides, f"{prefix}_projection")(x)
            shortcut = batch_norm(f"{prefix}_projection_bn")(shortcut)
        y = layers.Add(name=f"{prefix}_add")([y, shortcut])
        return layers.ReLU(name=f"{prefix}_out")(y)

    x_in = tf.keras.Input(input_shape, name="input")
    x = conv(16, 3, 1, "conv0")(x_in)
    x = batch_norm("bn0")(x)
    x = layers.ReLU(name="relu0")(x)
    for stage, filters in enumerate(widths, start=1):
        for b in range(1, blocks_per_stage + 1):
            first = b == 1
            x = block(
                x,
                filters,
                strides=2 if first and stage > 1 else 1,
                projection=first and stage == 1,
                prefix=f"stage{stage}_block{b}",
            )
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return logits_model(x_in, x, num_classes, name, kernel_regularizer=reg, bias_regularizer=reg)


def resnet20(
    num_classes: int = 10,
    weight_decay: float = 1e-4,
    *,
    input_shape: tuple[int | None, int | None, int] = (32, 32, 3),
) -> tf.keras.Model:
    """ResNet-20 for CIFAR-10 as in the official FedLUAR code; returns logits.

    A 3x3 convolution with 16 filters, then three stages of three residual
    blocks with 16, 32 and 64 filters (the second and third stages start with
    stride 2), global average pooling and the logits. BatchNorm uses Keras's
    defaults (momentum 0.99, epsilon 1e-3), as in the official code. See the
    module docstring for the block layout and the shortcuts.

    23 recycling candidates: 19 3x3 kernels, three 1x1 projection kernels and
    the logits kernel, 271,152 parameters in all. 272,762 trainable parameters
    for 10 classes (the paper's count: the kernels, 1,600 BatchNorm gamma and
    beta and 10 logits biases); `count_params()` gives 274,362 with the 1,600
    BatchNorm moving statistics.

    Weight decay: L2 on every kernel and on the logits bias, where the
    official code puts it (24 regularization losses).

    Args:
      num_classes: Number of output logits.
      weight_decay: L2 coefficient; 0 adds no regularizers.
      input_shape: ``(height, width, 3)``; None leaves a size open, since
        global pooling makes the network independent of the image size.

    Returns:
      An uncompiled functional `tf.keras.Model` mapping images to
      ``(batch, num_classes)`` logits.

    Raises:
      TypeError: If an argument has the wrong type.
      ValueError: If `num_classes` < 1, `weight_decay` < 0 or `input_shape`
        is not a 3-channel image shape.

    Examples:
      >>> from keras_luar.layers import describe_model
      >>> model = resnet20()
      >>> layout = describe_model(model)
      >>> layout.num_candidates, layout.trainable_size, sum(layout.candidate_sizes)
      (23, 272762, 271152)

    References:
      He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition",
      CVPR 2016.
    """
    return _residual_network(
        "resnet20",
        widths=(16, 32, 64),
        blocks_per_stage=3,
        num_classes=check_int("num_classes", num_classes, 1),
        weight_decay=check_weight_decay(weight_decay),
        bn_momentum=0.99,
        bn_epsilon=1e-3,
        dropout=0.0,
        input_shape=check_image_shape(input_shape, 3),
    )


def wrn28_10(
    num_classes: int = 100,
    weight_decay: float = 5e-4,
    *,
    dropout: float = 0.3,
    input_shape: tuple[int | None, int | None, int] = (32, 32, 3),
) -> tf.keras.Model:
    """Wide ResNet 28-10 for CIFAR-100 as in the official FedLUAR code; returns logits.

    Depth 28 gives (28 - 4) / 6 = 4 blocks per stage; width 10 gives stages of
    160, 320 and 640 filters after a 3x3 stem of 16. Each block has dropout
    between its two convolutions; BatchNorm uses momentum 0.99 and epsilon
    1e-5. The official model ends in a softmax; this one returns the logits.
    See the module docstring for the block layout and the shortcuts.

    29 recycling candidates: the stem, 24 3x3 kernels, three 1x1 projections
    and the logits kernel. 36,539,124 trainable parameters for 100 classes;
    `count_params()` gives 36,559,316 with the BatchNorm moving statistics.

    Weight decay: L2 on every kernel and on the logits bias, where the
    official code puts it (30 regularization losses).

    Args:
      num_classes: Number of output logits.
      weight_decay: L2 coefficient; 0 adds no regularizers.
      dropout: Dropout rate inside the blocks (the official 0.3); 0 removes
        the dropout layers.
      input_shape: ``(height, width, 3)``; None leaves a size open.

    Returns:
      An uncompiled functional `tf.keras.Model` mapping images to
      ``(batch, num_classes)`` logits.

    Raises:
      TypeError: If an argument has the wrong type.
      ValueError: If `num_classes` < 1, `weight_decay` < 0, `dropout` is not
        in [0, 1) or `input_shape` is not a 3-channel image shape.

    Examples:
      >>> from keras_luar.layers import describe_model
      >>> model = wrn28_10()
      >>> describe_model(model).num_candidates, describe_model(model).trainable_size
      (29, 36539124)

    References:
      Zagoruyko, Komodakis, "Wide Residual Networks", BMVC 2016.
      He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition",
      CVPR 2016.
    """
    k = 10
    return _residual_network(
        "wrn28_10",
        widths=(16 * k, 32 * k, 64 * k),
        blocks_per_stage=(28 - 4) // 6,
        num_classes=check_int("num_classes", num_classes, 1),
        weight_decay=check_weight_decay(weight_decay),
        bn_momentum=0.99,
        bn_epsilon=1e-5,
        dropout=check_rate("dropout", dropout),
        input_shape=check_image_shape(input_shape, 3),
    )
