"""The paper's benchmarks, one call away: model, data and the paper's settings.

Each function returns a `Preset` made from one row of the table in
`keras_luar.experiments.presets` (see its docstring for the settings of every
row and where a preset departs from the paper's run). `PRESETS` maps the names
`keras-luar run --preset NAME` takes to the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras_luar.experiments.presets import (
    AGNEWS_TEXT,
    CIFAR10_RESNET20,
    CIFAR100_WRN28,
    FEMNIST_CNN,
    SHAKESPEARE,
    VOCABULARY_SIZE,
    PaperSettings,
    Preset,
    PresetSpec,
    make_preset,
)

__all__ = [
    "AGNEWS_TEXT",
    "CIFAR100_WRN28",
    "CIFAR10_RESNET20",
    "FEMNIST_CNN",
    "PRESETS",
    "SHAKESPEARE",
    "VOCABULARY_SIZE",
    "PaperSettings",
    "Preset",
    "PresetSpec",
    "agnews_text",
    "cifar100_wrn28",
    "cifar10_resnet20",
    "femnist_cnn",
    "make_preset",
    "shakespeare",
]


def cifar10_resnet20(
    *, data_dir: Any = None, download: bool = True, num_clients: int = 128, seed: int = 0
) -> Preset:
    """CIFAR-10 with ResNet-20: 128 clients, Dirichlet α = 0.1, δ = 12, 200 rounds.

    Args:
      data_dir: The data cache holding CIFAR-10 (``cifar-10-batches-py/`` or its archive;
        see `keras_luar.data.cifar`).
      download: Whether to try downloading CIFAR-10 when it is missing.
      num_clients: Clients of the Dirichlet split.
      seed: Seeds the split and the model's initial weights.

    Returns:
      The `Preset` of the `CIFAR10_RESNET20` row (see `make_preset`).

    Raises:
      keras_luar.data.cache.MissingDataError: If CIFAR-10 is neither in the data
        cache nor downloadable.
      ValueError: If an argument is invalid or there are too few images for
        `num_clients`.
    """
    return make_preset(
        CIFAR10_RESNET20, data_dir=data_dir, download=download, num_clients=num_clients, seed=seed
    )


def cifar100_wrn28(
    *, data_dir: Any = None, download: bool = True, num_clients: int = 128, seed: int = 0
) -> Preset:
    """CIFAR-100 with WRN-28-10: 128 clients, Dirichlet α = 0.1, δ = 12, 300 rounds.

    Args:
      data_dir: The data cache holding CIFAR-100 (``cifar-100-python/`` or its archive;
        see `keras_luar.data.cifar`).
      download: Whether to try downloading CIFAR-100 when it is missing.
      num_clients: Clients of the Dirichlet split.
      seed: Seeds the split and the model's initial weights.

    Returns:
      The `Preset` of the `CIFAR100_WRN28` row (see `make_preset`).

    Raises:
      keras_luar.data.cache.MissingDataError: If CIFAR-100 is neither in the data
        cache nor downloadable.
      ValueError: If an argument is invalid or there are too few images for
        `num_clients`.
    """
    return make_preset(
        CIFAR100_WRN28, data_dir=data_dir, download=download, num_clients=num_clients, seed=seed
    )


def femnist_cnn(
    *, data_dir: Any = None, download: bool = True, num_clients: int = 128, seed: int = 0
) -> Preset:
    """FEMNIST with the paper's CNN: 128 writers, δ = 2, 200 rounds.

    Args:
      data_dir: The data cache holding FEMNIST (TFF's ``emnist_all.sqlite``; see
        `keras_luar.data.femnist`).
      download: Whether to try downloading FEMNIST when it is missing.
      num_clients: Writers (clients) to use.
      seed: Seeds the choice of writers and the model's initial weights.

    Returns:
      The `Preset` of the `FEMNIST_CNN` row (see `make_preset`).

    Raises:
      keras_luar.data.cache.MissingDataError: If FEMNIST is neither in the data
        cache nor downloadable.
      ValueError: If an argument is invalid or there are too few writers for
        `num_clients`.
    """
    return make_preset(
        FEMNIST_CNN, data_dir=data_dir, download=download, num_clients=num_clients, seed=seed
    )


def agnews_text(
    *, data_dir: Any = None, download: bool = True, num_clients: int = 128, seed: int = 0
) -> Preset:
    """AG News with a small transformer: 128 clients, Dirichlet α = 0.5, 100 rounds.

    See the module docstring for how this differs from the paper's DistilBERT run.

    Args:
      data_dir: The data cache holding AG News (``ag_news_csv/train.csv`` and ``test.csv``;
        see `keras_luar.data.agnews`).
      download: Whether to try downloading AG News when it is missing.
      num_clients: Clients of the Dirichlet split.
      seed: Seeds the split and the model's initial weights.

    Returns:
      The `Preset` of the `AGNEWS_TEXT` row (see `make_preset`).

    Raises:
      keras_luar.data.cache.MissingDataError: If AG News is neither in the data
        cache nor downloadable.
      ValueError: If an argument is invalid or there are too few rows for
        `num_clients`.
    """
    return make_preset(
        AGNEWS_TEXT, data_dir=data_dir, download=download, num_clients=num_clients, seed=seed
    )


def shakespeare(
    *, data_dir: Any = None, download: bool = True, num_clients: int | None = None, seed: int = 0
) -> Preset:
    """Shakespeare next-character prediction with a character LSTM (not in the paper).

    Args:
      data_dir: The data cache holding Shakespeare (TFF's ``shakespeare.sqlite``; see
        `keras_luar.data.shakespeare`).
      download: Whether to try downloading Shakespeare when it is missing.
      num_clients: Speaking roles to use (None: all).
      seed: Seeds the choice of roles and the model's initial weights.

    Returns:
      The `Preset` of the `SHAKESPEARE` row (see `make_preset`).

    Raises:
      keras_luar.data.cache.MissingDataError: If Shakespeare is neither in the data
        cache nor downloadable.
      ValueError: If an argument is invalid or there are too few roles for
        `num_clients`.
    """
    return make_preset(
        SHAKESPEARE, data_dir=data_dir, download=download, num_clients=num_clients, seed=seed
    )


PRESETS: dict[str, Callable[..., Preset]] = {
    "cifar10_resnet20": cifar10_resnet20,
    "cifar100_wrn28": cifar100_wrn28,
    "femnist_cnn": femnist_cnn,
    "agnews_text": agnews_text,
    "shakespeare": shakespeare,
}
