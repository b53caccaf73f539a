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


def _arguments(data_dir: Any, download: bool, num_clients: Any, seed: int) -> dict[str, Any]:
    return dict(data_dir=data_dir, download=download, num_clients=num_clients, seed=seed)


def cifar10_resnet20(
    *, data_dir: Any = None, download: bool = True, num_clients: int = 128, seed: int = 0
) -> Preset:
    """CIFAR-10 with ResNet-20: 128 clients, Dirichlet α = 0.1, δ = 12, 200 rounds.

    Returns the `Preset` of the `CIFAR10_RESNET20` row; `data_dir` is the cache that holds
    ``cifar-10-batches-py/`` or its archive (`keras_luar.data.cifar`), `num_clients` the Dirichlet split's clients; the arguments and errors are `make_preset`'s.
    """
    return make_preset(CIFAR10_RESNET20, **_arguments(data_dir, download, num_clients, seed))


def cifar100_wrn28(
    *, data_dir: Any = None, download: bool = True, num_clients: int = 128, seed: int = 0
) -> Preset:
    """CIFAR-100 with WRN-28-10: 128 clients, Dirichlet α = 0.1, δ = 12, 300 rounds.

    Returns the `Preset` of the `CIFAR100_WRN28` row; `data_dir` is the cache that holds
    ``cifar-100-python/`` or its archive (`keras_luar.data.cifar`), `num_clients` the Dirichlet split's clients; the arguments and errors are `make_preset`'s.
    """
    return make_preset(CIFAR100_WRN28, **_arguments(data_dir, download, num_clients, seed))


def femnist_cnn(
    *, data_dir: Any = None, download: bool = True, num_clients: int = 128, seed: int = 0
) -> Preset:
    """FEMNIST with the paper's CNN: 128 writers, δ = 2, 200 rounds.

    Returns the `Preset` of the `FEMNIST_CNN` row; `data_dir` is the cache that holds
    TFF's ``emnist_all.sqlite`` (`keras_luar.data.femnist`), `num_clients` the writers to use; the arguments and errors are `make_preset`'s.
    """
    return make_preset(FEMNIST_CNN, **_arguments(data_dir, download, num_clients, seed))


def agnews_text(
    *, data_dir: Any = None, download: bool = True, num_clients: int = 128, seed: int = 0
) -> Preset:
    """AG News with a small transformer: 128 clients, Dirichlet α = 0.5, 100 rounds.

    See the module docstring of `keras_luar.experiments.presets` for how this
    differs from the paper's DistilBERT run.

    Returns the `Preset` of the `AGNEWS_TEXT` row; `data_dir` is the cache that holds
    ``ag_news_csv/train.csv`` and ``test.csv`` (`keras_luar.data.agnews`), `num_clients` the Dirichlet split's clients; the arguments and errors are `make_preset`'s.
    """
    return make_preset(AGNEWS_TEXT, **_arguments(data_dir, download, num_clients, seed))


def shakespeare(
    *, data_dir: Any = None, download: bool = True, num_clients: int | None = None, seed: int = 0
) -> Preset:
    """Shakespeare next-character prediction with a character LSTM (not in the paper).

    Returns the `Preset` of the `SHAKESPEARE` row; `data_dir` is the cache that holds
    TFF's ``shakespeare.sqlite`` (`keras_luar.data.shakespeare`), `num_clients` the speaking roles to use (None: all); the arguments and errors are `make_preset`'s.
    """
    return make_preset(SHAKESPEARE, **_arguments(data_dir, download, num_clients, seed))


PRESETS: dict[str, Callable[..., Preset]] = {
    "cifar10_resnet20": cifar10_resnet20,
    "cifar100_wrn28": cifar100_wrn28,
    "femnist_cnn": femnist_cnn,
    "agnews_text": agnews_text,
    "shakespeare": shakespeare,
}
