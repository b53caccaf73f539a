"""A small transformer encoder for text classification (the AG News stand-in).

The FedLUAR paper fine-tunes a pretrained DistilBERT on AG News: six
transformer layers of width 768 topped by a 2048-unit ReLU layer and the
classifier, about 40 recycling candidates and 67M parameters. keras_luar
downloads no pretrained weights, so `text_classifier` is a much smaller
encoder of the same kind, trained from scratch: its accuracy is not the
paper's, and its number of candidates L is smaller, so δ has to be scaled
(the AG News preset uses round(30/40 · L)).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from keras_luar.models._common import check_int, check_model_arguments, l2, logits_model


@tf.keras.utils.register_keras_serializable(package="keras_luar")
class PositionEmbedding(tf.keras.layers.Layer):
    """Adds a learned embedding of each position to a sequence of vectors.

    A layer rather than an `Embedding` applied to ``tf.range``: positions are
    not an input of the model, and a layer keeps the table a tracked weight
    that `tf.keras.models.clone_model` can copy.

    Args:
      sequence_length: The longest sequence the table covers.
      initializer: Initializer of the ``(sequence_length, dim)`` table; by
        default the one of `tf.keras.layers.Embedding`.
      **kwargs: Passed to `tf.keras.layers.Layer`.
    """

    def __init__(self, sequence_length: int, initializer: Any = "uniform", **kwargs: Any):
        super().__init__(**kwargs)
        self.sequence_length = check_int("sequence_length", sequence_length, 1)
        self.initializer = tf.keras.initializers.get(initializer)
        self.supports_masking = True

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, int(input_shape[-1])),
            initializer=self.initializer,
            trainable=True,
        )
        super().build(input_shape)

    def call(self, inputs):
        length = tf.shape(inputs)[-2]
        return inputs + tf.cast(self.embeddings[:length], inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            sequence_length=self.sequence_length,
            initializer=tf.keras.initializers.serialize(self.initializer),
        )
        return config


@check_model_arguments(
    size="vocabulary_size sequence_length num_classes embed_dim num_heads ff_dim num_blocks",
    rate="dropout",
)
def text_classifier(
    vocabulary_size: int = 20000,
    sequence_length: int = 128,
    num_classes: int = 4,
    *,
    embed_dim: int = 128,
    num_heads: int = 4,
    ff_dim: int = 256,
    num_blocks: int = 2,
    dropout: float = 0.1,
    weight_decay: float = 1e-4,
) -> tf.keras.Model:
    """A small transformer encoder for text classification, trained from scratch; returns logits.

    Token embeddings plus learned position embeddings feed `num_blocks`
    post-norm encoder blocks (self-attention, then a ReLU feed-forward layer of
    `ff_dim` units, each with dropout, a residual connection and layer
    normalization, as in Vaswani et al.). The token vectors are averaged, and
    a ReLU layer of `ff_dim` units and the logits follow, the head of the
    official DistilBERT model at a smaller width. Token id 0 (padding) is not
    masked: it is embedded like any other token.

    This is a stand-in for the paper's pretrained DistilBERT (about 40
    candidates); see the module docstring.

    Recycling candidates: 2 + 9 · num_blocks + 2, 22 by default: the token and
    position tables; per block the query, key, value and output kernels of
    the attention, the query, key and value biases (Keras stores them as
    (heads, head size) matrices, so they are rank 2 and count as candidates)
    and the two feed-forward kernels; the head and logits kernels.
    Parameters, with V = vocabulary_size, T = sequence_length, D = embed_dim,
    F = ff_dim, C = num_classes: V·D + T·D + num_blocks · (4·D² + 4·D + 4·D
    + 2·D·F + F + D) + D·F + F + F·C + C; 2,875,396 by default.

    Weight decay: L2 on the head layer's kernel only, where the official
    DistilBERT model has it (1 regularization loss).

    Args:
      vocabulary_size: Number of token ids (ids are 0 .. vocabulary_size - 1).
      sequence_length: Tokens per example.
      num_classes: Number of output logits (4 for AG News).
      embed_dim: Width D of the token vectors.
      num_heads: Attention heads; must divide `embed_dim`.
      ff_dim: Units of the feed-forward layers and of the head layer.
      num_blocks: Encoder blocks.
      dropout: Dropout rate after the embeddings, in attention, after each
        sublayer and before the head.
      weight_decay: L2 coefficient of the head kernel; 0 adds no regularizer.

    Returns:
      An uncompiled functional `tf.keras.Model` mapping ``(batch,
      sequence_length)`` int32 token ids to ``(batch, num_classes)`` logits.

    Raises:
      TypeError: If an argument has the wrong type.
      ValueError: If a size is < 1, `num_heads` does not divide `embed_dim`,
        `dropout` is not in [0, 1) or `weight_decay` < 0.

    Examples:
      >>> from keras_luar.layers import describe_model
      >>> model = text_classifier()
      >>> describe_model(model).num_candidates, model.count_params()
      (22, 2875396)

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
      Sanh, Debut, Chaumond, Wolf, "DistilBERT, a distilled version of BERT",
      2019 (the paper's model).
    """
    reg = l2(weight_decay)
    if embed_dim % num_heads:
        raise ValueError(
            "Invalid value for argument `num_heads`. Expected a divisor of "
            f"embed_dim={embed_dim}. Received: num_heads={num_heads}"
        )

    layers = tf.keras.layers
    tokens = tf.keras.Input((sequence_length,), dtype=tf.int32, name="tokens")
    x = layers.Embedding(vocabulary_size, embed_dim, name="token_embedding")(tokens)
    x = PositionEmbedding(sequence_length, name="position_embedding")(x)
    x = layers.Dropout(dropout, name="embedding_dropout")(x)
    for b in range(1, num_blocks + 1):
        p = f"block{b}"
        attention = layers.MultiHeadAttention(
            num_heads, embed_dim // num_heads, dropout=dropout, name=f"{p}_attention"
        )(x, x)
        attention = layers.Dropout(dropout, name=f"{p}_attention_dropout")(attention)
        x = layers.Add(name=f"{p}_attention_add")([x, attention])
        x = layers.LayerNormalization(epsilon=1e-6, name=f"{p}_attention_norm")(x)
        ff = layers.Dense(ff_dim, activation="relu", name=f"{p}_ff1")(x)
        ff = layers.Dense(embed_dim, name=f"{p}_ff2")(ff)
        ff = layers.Dropout(dropout, name=f"{p}_ff_dropout")(ff)
        x = layers.Add(name=f"{p}_ff_add")([x, ff])
        x = layers.LayerNormalization(epsilon=1e-6, name=f"{p}_ff_norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Dense(ff_dim, activation="relu", kernel_regularizer=reg, name="head")(x)
    return logits_model(tokens, x, num_classes, "text_classifier")
