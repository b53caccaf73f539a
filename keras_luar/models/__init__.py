"""Reference models of the FedLUAR benchmarks, returning logits.

Every builder returns an uncompiled functional `tf.keras.Model` (so that
`tf.keras.models.clone_model` and TFF's `from_keras_model` work on it) whose
outputs are logits: train with ``from_logits=True`` losses. Weight decay is
built in as Keras L2 regularizers, which TFF's `from_keras_model` adds to the
loss. The builders take no seed: call `tf.keras.utils.set_random_seed` first
for reproducible initial weights.

| builder | benchmark | candidates L | trainable parameters |
| --- | --- | --- | --- |
| `femnist_cnn` | FEMNIST | 4 | 6,603,710 |
| `resnet20` | CIFAR-10 | 23 | 272,762 |
| `wrn28_10` | CIFAR-100 | 29 | 36,539,124 |
| `text_classifier` | AG News (stand-in for DistilBERT) | 22 | 2,875,396 |
| `char_rnn` | Shakespeare (TFF's baseline) | 6 | 820,522 |

Examples:
  >>> from keras_luar import models
  >>> models.resnet20().output_shape
  (None, 10)
"""

from keras_luar.models.cnn import femnist_cnn
from keras_luar.models.resnet import resnet20, wrn28_10
from keras_luar.models.rnn import char_rnn
from keras_luar.models.transformer import PositionEmbedding, text_classifier

__all__ = [
    "PositionEmbedding",
    "char_rnn",
    "femnist_cnn",
    "resnet20",
    "text_classifier",
    "wrn28_10",
]
