"""Seeded per-example data augmentation for federated training.

`FederatedTrainer(augmentation=fn)` calls ``fn(x, seed)`` on every training
example of every client in every round, after the round's shuffle. `seed` is a
stateless-RNG seed (an int64 tensor of shape [2]) that differs for every run
seed, round, client and position in the round, so a run stays reproducible
while each round sees new random transformations.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

Augmentation = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def random_crop_flip(padding: int = 4) -> Augmentation:
    """Pad by `padding` zeros, crop back to the original size at random, flip left-right at random.

    This is the CIFAR augmentation of the official FedLUAR code
    (``pad_to_bounding_box`` by 4, ``random_crop`` to 32×32,
    ``random_flip_left_right``), with stateless, seeded random ops.

    Args:
      padding: Pixels of zero padding on each side.

    Returns:
      A function ``(image [H, W, C], seed [2]) -> image [H, W, C]``.

    Raises:
      ValueError: If `padding` is negative or not an int.

    Examples:
      >>> import tensorflow as tf
      >>> augment = random_crop_flip(4)
      >>> image = tf.reshape(tf.range(2 * 2 * 1, dtype=tf.float32), [2, 2, 1])
      >>> augment(image, tf.constant([1, 2], tf.int64)).shape.as_list()
      [2, 2, 1]
    """
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(
            "Invalid value for argument `padding`. Expected an int >= 0. "
            f"Received: padding={padding!r}"
        )

    def augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        height, width = image.shape[0], image.shape[1]
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        padded = tf.image.pad_to_bounding_box(
            image, padding, padding, height + 2 * padding, width + 2 * padding
        )
        cropped = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
        return tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)

    return augment
