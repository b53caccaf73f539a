"""A character LSTM for Shakespeare next-character prediction."""

from __future__ import annotations

import tensorflow as tf

from keras_luar.models._common import check_model_arguments, l2, logits_model

# TFF's Shakespeare preprocessing: 86 characters plus pad (0), out-of-vocabulary,
# beginning- and end-of-snippet ids.
TFF_SHAKESPEARE_VOCABULARY_SIZE = 90


@check_model_arguments(
    size="vocabulary_size sequence_length embed_dim units num_layers", flag="mask_zero"
)
def char_rnn(
    vocabulary_size: int = TFF_SHAKESPEARE_VOCABULARY_SIZE,
    sequence_length: int = 80,
    *,
    embed_dim: int = 8,
    units: int = 256,
    num_layers: int = 2,
    mask_zero: bool = True,
    weight_decay: float = 0.0,
) -> tf.keras.Model:
    """A character LSTM predicting the next character at every position; returns logits.

    The defaults are the model of TFF's Shakespeare baseline
    (``tff.simulation.baselines.shakespeare``), which follows McMahan et al.
    (2017): an 8-dimensional character embedding, two LSTM layers of 256 units
    (He-normal input kernels) and a dense layer over the vocabulary at every
    step. Shakespeare is not in the FedLUAR paper.

    With `mask_zero`, id 0 is padding: Keras propagates the mask to the
    output, and Keras losses then leave padded positions out (accuracy
    metrics do not; TFF's baseline masks them with its own metric).

    Recycling candidates: 1 + 2 · num_layers + 1, 6 by default: the embedding,
    the input and recurrent kernel of each LSTM, the output kernel.
    Parameters, with V = vocabulary_size, E = embed_dim, U = units: V·E +
    4·U·(E + U + 1) + (num_layers - 1) · 4·U·(2·U + 1) + U·V + V; 820,522 by
    default.

    Weight decay: TFF's model has none (the default 0). A positive value puts
    L2 on the LSTM input and recurrent kernels and the output kernel
    (2 · num_layers + 1 regularization losses).

    Args:
      vocabulary_size: Number of character ids, padding included (90 for
        TFF's preprocessing).
      sequence_length: Characters per example.
      embed_dim: Width of the character embedding.
      units: Units of each LSTM layer.
      num_layers: Stacked LSTM layers.
      mask_zero: Whether id 0 is padding to be masked.
      weight_decay: L2 coefficient; 0 adds no regularizers.

    Returns:
      An uncompiled functional `tf.keras.Model` mapping ``(batch,
      sequence_length)`` int32 ids to ``(batch, sequence_length,
      vocabulary_size)`` logits.

    Raises:
      TypeError: If an argument has the wrong type.
      ValueError: If a size is < 1 or `weight_decay` < 0.

    Examples:
      One next-character distribution per input position:

      >>> model = char_rnn()
      >>> model(tf.zeros([2, 80], tf.int32)).shape, model.count_params()
      (TensorShape([2, 80, 90]), 820522)

    References:
      McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-Efficient
      Learning of Deep Networks from Decentralized Data", AISTATS 2017.
      Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018 (the
      Shakespeare data).
    """
    reg = l2(weight_decay)

    layers = tf.keras.layers
    chars = tf.keras.Input((sequence_length,), dtype=tf.int32, name="chars")
    x = layers.Embedding(vocabulary_size, embed_dim, mask_zero=mask_zero, name="embedding")(chars)
    for i in range(1, num_layers + 1):
        x = layers.LSTM(
            units,
            return_sequences=True,
            kernel_initializer="he_normal",
            kernel_regularizer=reg,
            recurrent_regularizer=reg,
            name=f"lstm{i}",
        )(x)
    return logits_model(chars, x, vocabulary_size, "char_rnn", kernel_regularizer=reg)
