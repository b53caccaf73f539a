"""The paper's benchmarks, one call away: model, data and the paper's settings.

Each preset returns a `Preset`: the reference model (`keras_luar.models`), the
federated data (`keras_luar.data` loaders, which read the cache directory and
fail at once, saying what to download, when the data is missing) and
`PaperSettings`, the hyper-parameters of the FedLUAR paper (its Table 5 and
the official code's configuration):

| preset | model | clients | rounds | batch | lr (×0.1 at) | weight decay | δ |
| --- | --- | --- | --- | --- | --- | --- | --- |
| `cifar10_resnet20` | ResNet-20 | 32 of 128, Dir(0.1) | 200 | 32 | 0.2 (100, 150) | 1e-4 | 12 |
| `cifar100_wrn28` | WRN-28-10 | 32 of 128, Dir(0.1) | 300 | 32 | 0.1 (150, 200) | 5e-4 | 12 |
| `femnist_cnn` | FEMNIST CNN | 32 of 128 writers | 200 | 20 | 0.01 (100, 150) | 1e-4 | 2 |
| `agnews_text` | small transformer | 32 of 128, Dir(0.5) | 100 | 128 | see below (60, 80) | 1e-4 | ¾·L |
| `shakespeare` | character LSTM | 32 roles | 100 | 10 | 1.0 | 0 | 2 |

Every client runs τ = 20 local SGD steps with momentum 0.9 (Shakespeare: no
momentum), fresh each round. The CIFAR presets augment training images as the
official code does (pad 4, random 32×32 crop, random horizontal flip). `keras-luar run --preset NAME` runs a preset
from the command line.

Each preset is a row of one table, a `PresetSpec` (loader, model builder,
settings; `CIFAR10_RESNET20`, `CIFAR100_WRN28`, `FEMNIST_CNN`, `AGNEWS_TEXT`,
`SHAKESPEARE`), which `make_preset` turns into a `Preset`; a variant is
``make_preset(dataclasses.replace(row, ...))``.

Where a preset is not the paper's run, it says so:

* AG News: the paper fine-tunes a pretrained DistilBERT (about 40 candidate
  layers, δ = 30, learning rate 1e-5). keras_luar downloads no pretrained
  weights, so the preset trains a small transformer from scratch
  (`keras_luar.models.text_classifier`) with δ = round(30/40 · L) and a
  learning rate of 0.05, a value chosen for training from scratch that has
  not been tuned on the real data here.
* Shakespeare is not in the FedLUAR paper; its settings follow the
  character-LSTM setup of McMahan et al. (2017) and TFF's tutorial
  (learning rate 1.0, batch 10), with the paper's τ and client counts.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from keras_luar import layers, models
from keras_luar.data.agnews import load_agnews_federated
from keras_luar.data.augment import Augmentation, random_crop_flip
from keras_luar.data.cifar import load_cifar_federated
from keras_luar.data.federated import FederatedData
from keras_luar.data.femnist import load_femnist_federated
from keras_luar.data.shakespeare import load_shakespeare_federated
from keras_luar.trainer import FederatedTrainer

VOCABULARY_SIZE = 20_000  # AG News word vocabulary, built from the training split


def _recycles(algorithm: str) -> bool:
    """Whether `algorithm` is FedLUAR itself (the preset's δ is FedLUAR's)."""
    from keras_luar.algorithms import registry

    return registry.get(algorithm).luar == "always"


@dataclasses.dataclass(frozen=True)
class PaperSettings:
    """Hyper-parameters of one benchmark run.

    Attributes:
      rounds: Federated rounds.
      clients_per_round: Clients sampled per round.
      local_steps: τ, local optimizer steps per client and round.
      batch_size: Local batch size.
      learning_rate: Initial client learning rate.
      momentum: Client SGD momentum.
      decay_rounds: Rounds at whose start the learning rate is multiplied by
        `decay_factor`.
      decay_factor: The learning-rate decay factor.
      weight_decay: L2 coefficient built into the model's regularizers.
      num_recycled_layers: FedLUAR's δ.
    """

    rounds: int
    clients_per_round: int
    local_steps: int
    batch_size: int
    learning_rate: float
    momentum: float
    decay_rounds: tuple[int, ...]
    decay_factor: float
    weight_decay: float
    num_recycled_layers: int

    def learning_rate_at(self, round_num: int) -> float:
        """The client learning rate of `round_num` (0-based)."""
        steps = sum(round_num >= r for r in self.decay_rounds)
        return self.learning_rate * self.decay_factor**steps


@dataclasses.dataclass(frozen=True, eq=False)
class Preset:
    """A benchmark ready to train.

    Attributes:
      name: The preset's name, e.g. ``"cifar10_resnet20"``.
      model: The reference Keras model (uncompiled, logits).
      data: The federated data.
      settings: The paper's hyper-parameters, adapted to the data at hand
        (`clients_per_round` never exceeds the number of clients).
      paper: The paper's results for this benchmark, for comparison:
        ``{"FedAvg": (accuracy %, comm), "FedLUAR": (accuracy %, comm)}``.
      augmentation: The official code's training augmentation, if any (CIFAR:
        `keras_luar.data.augment.random_crop_flip`), given to the trainer.
    """

    name: str
    model: tf.keras.Model
    data: FederatedData
    settings: PaperSettings
    paper: dict[str, tuple[float, float]]
    augmentation: Any = None

    def trainer(
        self, *, algorithm: str = "fedluar", seed: int = 0, **kwargs: Any
    ) -> FederatedTrainer:
        """A `FederatedTrainer` for this preset's model with the paper's settings.

        Args:
          algorithm: Any `FederatedTrainer` algorithm.
          seed: The run's seed.
          **kwargs: Overrides of `FederatedTrainer` arguments (e.g.
            ``num_recycled_layers``) and the algorithm's options.

        Returns:
          The trainer, holding a copy of `model` with its current weights (so
          every trainer of this preset starts from the same weights). Its
          client optimizer is SGD with the preset's learning rate and
          momentum; `fit` applies the decay.
        """
        s = self.settings
        options: dict[str, Any] = dict(
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            algorithm=algorithm,
            num_recycled_layers=s.num_recycled_layers if _recycles(algorithm) else None,
            local_steps=s.local_steps,
            batch_size=s.batch_size,
            client_optimizer=tf.keras.optimizers.SGD(s.learning_rate, momentum=s.momentum),
            augmentation=self.augmentation,
            seed=seed,
        )
        options.update(kwargs)
        # Each trainer trains a copy, so `self.model` keeps its weights: trainers made
        # one after another (e.g. FedAvg, then FedLUAR) all start from the same point.
        model = tf.keras.models.clone_model(self.model)
        model.set_weights(self.model.get_weights())
        return FederatedTrainer(model, **options)

    def fit(
        self,
        trainer: FederatedTrainer,
        *,
        rounds: int | None = None,
        callbacks: list[tf.keras.callbacks.Callback] | None = None,
        **fit_kwargs: Any,
    ) -> tf.keras.callbacks.History:
        """Runs `trainer.fit` with the preset's rounds, clients, decay and test data.

        Args:
          trainer: A trainer from `trainer`.
          rounds: Fewer (or more) rounds than the paper's; the decay rounds stay
            where the paper has them.
          callbacks: More Keras callbacks.
          **fit_kwargs: Passed to `FederatedTrainer.fit` (``verbose``,
            ``checkpoint_dir``, ...).

        Returns:
          The History.
        """
        s = self.settings
        schedule = tf.keras.callbacks.LearningRateScheduler(lambda r, lr: s.learning_rate_at(r))
        return trainer.fit(
            self.data,
            rounds=s.rounds if rounds is None else rounds,
            clients_per_round=s.clients_per_round,
            validation_data=self.data.test_dataset(256),
            callbacks=[schedule, *(callbacks or [])],
            **fit_kwargs,
        )


@dataclasses.dataclass(frozen=True)
class PresetSpec:
    """One row of the benchmark table: where the data and the model come from, and the settings.

    Attributes:
      name: The preset's name, e.g. ``"cifar10_resnet20"``.
      load_data: A loader of `keras_luar.data`, called as ``load_data(num_clients,
        seed=seed, data_dir=data_dir, download=download)``.
      build_model: Builds the reference model for the loaded data:
        ``build_model(data, weight_decay)``, called after the seed is set.
      settings: The paper's hyper-parameters. `make_preset` caps
        `clients_per_round` at the clients at hand.
      paper: The paper's results, ``{"FedAvg": (accuracy %, comm), ...}``.
      augmentation: The official code's training augmentation, or None.
      paper_candidates: When the model stands in for a larger one of the
        paper, that model's number of candidates: δ is then scaled to the
        model's own L, ``round(δ / paper_candidates · L)`` within [1, L - 1].

    Examples:
      >>> s = CIFAR10_RESNET20.settings
      >>> s.rounds, s.clients_per_round, s.learning_rate, s.decay_rounds
      (200, 32, 0.2, (100, 150))
    """

    name: str
    load_data: Callable[..., FederatedData]
    build_model: Callable[[FederatedData, float], tf.keras.Model]
    settings: PaperSettings
    paper: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    augmentation: Augmentation | None = None
    paper_candidates: int | None = None

    def num_recycled_layers(self, model: tf.keras.Model) -> int:
        """δ for `model`: the paper's, or scaled to its candidates (see `paper_candidates`)."""
        delta = self.settings.num_recycled_layers
        if self.paper_candidates is None:
            return delta
        num_candidates = layers.describe_model(model).num_candidates
        return min(
            max(1, round(delta / self.paper_candidates * num_candidates)), num_candidates - 1
        )


def _paper(**values: Any) -> PaperSettings:
    """`PaperSettings` where every benchmark agrees unless `values` say otherwise.

    32 clients per round, each running τ = 20 local SGD steps with momentum 0.9;
    the learning rate decays by 0.1.
    """
    common = {"clients_per_round": 32, "local_steps": 20, "momentum": 0.9, "decay_factor": 0.1}
    return PaperSettings(**{**common, **values})


def _cifar(
    name: str, build, rounds: int, learning_rate: float, decay_rounds, weight_decay, paper
) -> PresetSpec:
    """A CIFAR row: Dirichlet α = 0.1, batch 32, δ = 12, random crops and flips."""
    return PresetSpec(
        name,
        functools.partial(load_cifar_federated, name.split("_")[0], alpha=0.1),
        lambda data, wd: build(data.num_classes, wd),
        _paper(rounds=rounds, batch_size=32, learning_rate=learning_rate,
               decay_rounds=decay_rounds, weight_decay=weight_decay, num_recycled_layers=12),
        paper,
        augmentation=random_crop_flip(4),
    )  # fmt: skip


CIFAR10_RESNET20 = _cifar(
    "cifar10_resnet20", models.resnet20, 200, 0.2, (100, 150), 1e-4,
    {"FedAvg": (61.27, 1.00), "FedLUAR": (60.15, 0.47)},
)  # fmt: skip
CIFAR100_WRN28 = _cifar(
    "cifar100_wrn28", models.wrn28_10, 300, 0.1, (150, 200), 5e-4,
    {"FedAvg": (59.88, 1.00), "FedLUAR": (59.73, 0.61)},
)  # fmt: skip
FEMNIST_CNN = PresetSpec(
    "femnist_cnn",
    load_femnist_federated,
    lambda data, weight_decay: models.femnist_cnn(data.num_classes, weight_decay),
    _paper(rounds=200, batch_size=20, learning_rate=0.01, decay_rounds=(100, 150),
           weight_decay=1e-4, num_recycled_layers=2),
    {"FedAvg": (71.01, 1.00), "FedLUAR": (73.17, 0.18)},
)  # fmt: skip
# δ = 30 of DistilBERT's 40 candidates in the paper, scaled to the small transformer.
AGNEWS_TEXT = PresetSpec(
    "agnews_text",
    functools.partial(load_agnews_federated, alpha=0.5, vocabulary_size=VOCABULARY_SIZE),
    lambda data, weight_decay: models.text_classifier(
        VOCABULARY_SIZE, data.input_shape[0], data.num_classes, weight_decay=weight_decay
    ),
    _paper(rounds=100, batch_size=128, learning_rate=0.05, decay_rounds=(60, 80),
           weight_decay=1e-4, num_recycled_layers=30),
    {"FedAvg": (82.66, 1.00), "FedLUAR": (82.80, 0.17)},
    paper_candidates=40,
)  # fmt: skip
SHAKESPEARE = PresetSpec(
    "shakespeare",
    load_shakespeare_federated,
    lambda data, weight_decay: models.char_rnn(
        data.num_classes, data.input_shape[0], weight_decay=weight_decay
    ),
    _paper(rounds=100, batch_size=10, learning_rate=1.0, momentum=0.0, decay_rounds=(),
           weight_decay=0.0, num_recycled_layers=2),
)  # fmt: skip


def make_preset(
    spec: PresetSpec,
    *,
    data_dir: Any = None,
    download: bool = True,
    num_clients: int | None = 128,
    seed: int = 0,
) -> Preset:
    """Loads a preset's data and builds its model and settings.

    Args:
      spec: The row of the table, e.g. `CIFAR10_RESNET20`.
      data_dir: The data cache (see `keras_luar.data.cache`).
      download: Whether to try downloading missing data.
      num_clients: Clients to split the data into (or writers, roles, as the
        loader takes it; Shakespeare's loader takes None for all roles).
      seed: Seeds the split and the model's initial weights.

    Returns:
      The `Preset`; its `clients_per_round` never exceeds the clients loaded.

    Raises:
      keras_luar.data.cache.MissingDataError: If the data is missing.
      ValueError: If the loader rejects an argument or cannot make the split.

    Examples:
      >>> from keras_luar.data.cache import MissingDataError
      >>> try:
      ...     make_preset(FEMNIST_CNN, data_dir="/nonexistent/data", download=False)
      ... except MissingDataError as err:
      ...     print(str(err).split(". Expected")[0])
      FEMNIST is not in the data cache and could not be downloaded (download=False)
    """
    data = spec.load_data(num_clients, seed=seed, data_dir=data_dir, download=download)
    tf.keras.utils.set_random_seed(seed)
    model = spec.build_model(data, spec.settings.weight_decay)
    settings = dataclasses.replace(
        spec.settings,
        clients_per_round=min(spec.settings.clients_per_round, len(data.client_ids)),
        num_recycled_layers=spec.num_recycled_layers(model),
    )
    return Preset(spec.name, model, data, settings, dict(spec.paper), spec.augmentation)
