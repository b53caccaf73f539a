"""The embedded digits experiment: its models, settings, data and trainers.

A small CNN (or the same CNN with BatchNormalization) on scikit-learn's digits,
split over clients by the paper's Dirichlet partition, trained with
`FederatedTrainer`. For a comparison, every method starts from the same initial
weights and sees the same client sample in every round (all depend on the seed
only), so methods differ only in what they do with the updates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from keras_luar.data import FederatedData, load_digits_federated
from keras_luar.trainer import FederatedTrainer


def digits_cnn(num_classes: int = 10) -> tf.keras.Model:
    """A small CNN for 8x8 digits with 4 candidate kernels; returns logits.

    Args:
      num_classes: Number of output logits.

    Returns:
      An uncompiled `tf.keras.Sequential` model.
    """
    return tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 1)),
            tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            tf.keras.layers.MaxPooling2D(2, name="pool"),
            tf.keras.layers.Flatten(name="flatten"),
            tf.keras.layers.Dense(64, activation="relu", name="dense1"),
            tf.keras.layers.Dense(num_classes, name="logits"),
        ],
        name="digits_cnn",
    )


def digits_bn_cnn(num_classes: int = 10) -> tf.keras.Model:
    """`digits_cnn` with BatchNormalization after each convolution; returns logits.

    The convolutions have no bias (BatchNorm's beta takes its place), as in
    ResNets, so the model has the same 4 candidate kernels and 4 non-trainable
    statistics vectors (moving mean and variance of two layers).

    Args:
      num_classes: Number of output logits.

    Returns:
      An uncompiled `tf.keras.Sequential` model.
    """
    layers = tf.keras.layers
    return tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(name="relu1"),
            layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv2"),
            layers.BatchNormalization(name="bn2"),
            layers.ReLU(name="relu2"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="dense1"),
            layers.Dense(num_classes, name="logits"),
        ],
        name="digits_bn_cnn",
    )


# The models of the embedded experiment, by the name `DigitsSetup.model` takes.
DIGITS_MODELS: dict[str, Callable[[int], tf.keras.Model]] = {
    "cnn": digits_cnn,
    "bn_cnn": digits_bn_cnn,
}


@dataclasses.dataclass(frozen=True)
class DigitsSetup:
    """The embedded experiment's settings (defaults: the quickstart).

    ``model`` names one of `DIGITS_MODELS`: ``"cnn"`` (`digits_cnn`) or
    ``"bn_cnn"`` (`digits_bn_cnn`, with BatchNormalization).
    """

    rounds: int = 30
    num_clients: int = 32
    clients_per_round: int = 8
    alpha: float = 0.5
    local_steps: int = 20
    batch_size: int = 20
    learning_rate: float = 0.05
    momentum: float = 0.9
    # The paper decays the learning rate ×0.1 at 50% and 75% of the rounds.
    decay_at: tuple[float, ...] = (0.5, 0.75)
    model: str = "cnn"

    @property
    def decay_rounds(self) -> tuple[int, ...]:
        """Rounds at whose start the learning rate is multiplied by 0.1."""
        return tuple(int(round(f * self.rounds)) for f in self.decay_at)

    def learning_rate_at(self, round_num: int) -> float:
        """The client learning rate of `round_num` (0-based)."""
        return self.learning_rate * 0.1 ** sum(round_num >= r for r in self.decay_rounds)


def digits_data(setup: DigitsSetup, seed: int) -> FederatedData:
    """The digits split for `setup` (the split is seeded by `seed`)."""
    return load_digits_federated(setup.num_clients, setup.alpha, seed=seed)


def make_digits_trainer(
    setup: DigitsSetup,
    *,
    algorithm: str,
    num_recycled_layers: int,
    seed: int,
    server_learning_rate: float | None = None,
    num_classes: int = 10,
    **algorithm_options: Any,
) -> FederatedTrainer:
    """A `FederatedTrainer` for the digits CNN; the initial weights depend on `seed` only.

    `server_learning_rate` sets a Keras SGD server optimizer; any other keyword
    (an algorithm option such as ``proximal_strength``) goes to `FederatedTrainer`
    as it is, which raises `TypeError` for an option it does not know.
    """
    if setup.model not in DIGITS_MODELS:
        raise ValueError(
            f"Invalid value for argument `model`. Expected one of {tuple(DIGITS_MODELS)}. "
            f"Received: model={setup.model!r}"
        )
    tf.keras.utils.set_random_seed(seed)
    model = DIGITS_MODELS[setup.model](num_classes)
    server = None if server_learning_rate is None else tf.keras.optimizers.SGD(server_learning_rate)
    return FederatedTrainer(
        model,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        algorithm=algorithm,
        num_recycled_layers=num_recycled_layers,
        local_steps=setup.local_steps,
        batch_size=setup.batch_size,
        client_optimizer=tf.keras.optimizers.SGD(setup.learning_rate, momentum=setup.momentum),
        server_optimizer=server,
        seed=seed,
        **algorithm_options,
    )


def fit_digits(
    trainer: FederatedTrainer,
    setup: DigitsSetup,
    data: FederatedData,
    **fit_kwargs,
) -> tf.keras.callbacks.History:
    """Runs `trainer.fit` on `data` with the setup's rounds, clients and LR decay."""
    schedule = tf.keras.callbacks.LearningRateScheduler(lambda r, lr: setup.learning_rate_at(r))
    extra = fit_kwargs.pop("callbacks", None) or []
    callbacks = [schedule, *extra]
    return trainer.fit(
        data,
        rounds=setup.rounds,
        clients_per_round=setup.clients_per_round,
        validation_data=data.test_data,
        callbacks=callbacks,
        **fit_kwargs,
    )


class RoundPrinter(tf.keras.callbacks.Callback):
    """Hands each round's logs, recycled layer names and upload fraction to a function."""

    def __init__(
        self,
        trainer: FederatedTrainer,
        clients_per_round: int,
        on_round: Callable[[int, dict, list, float], None],
    ):
        super().__init__()
        self._trainer = trainer
        self._fedavg_upload = clients_per_round * trainer.layout.trainable_size
        self._on_round = on_round

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        fraction = logs["upload_params"] / self._fedavg_upload
        self._on_round(epoch, logs, list(self._trainer.last_recycled_layers), fraction)
