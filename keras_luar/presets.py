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


def _preset(spec: PresetSpec, summary: str, data: str, clients: str, num_clients: int | None):
    """The function that makes `spec`'s `Preset`, documented by its summary and data."""

    def preset(
        *,
        data_dir: Any = None,
        download: bool = True,
        num_clients: int | None = num_clients,
        seed: int = 0,
    ) -> Preset:
        return make_preset(
            spec, data_dir=data_dir, download=download, num_clients=num_clients, seed=seed
        )

    preset.__name__ = preset.__qualname__ = spec.name
    preset.__doc__ = (
        f"{summary}\n\nReturns the `Preset` of the `{spec.name.upper()}` row. `data_dir` is the "
        f"data cache, which holds {data}; `num_clients` is {clients}. The arguments and errors "
        "are `make_preset`'s."
    )
    return preset


cifar10_resnet20 = _preset(
    CIFAR10_RESNET20,
    "CIFAR-10 with ResNet-20: 128 clients, Dirichlet α = 0.1, δ = 12, 200 rounds.",
    "``cifar-10-batches-py/`` or its archive (`keras_luar.data.cifar`)",
    "the number of clients of the Dirichlet split",
    128,
)
cifar100_wrn28 = _preset(
    CIFAR100_WRN28,
    "CIFAR-100 with WRN-28-10: 128 clients, Dirichlet α = 0.1, δ = 12, 300 rounds.",
    "``cifar-100-python/`` or its archive (`keras_luar.data.cifar`)",
    "the number of clients of the Dirichlet split",
    128,
)
femnist_cnn = _preset(
    FEMNIST_CNN,
    "FEMNIST with the paper's CNN: 128 writers, δ = 2, 200 rounds.",
    "TFF's ``emnist_all.sqlite`` (`keras_luar.data.femnist`)",
    "the number of writers to use",
    128,
)
agnews_text = _preset(
    AGNEWS_TEXT,
    "AG News with a small transformer: 128 clients, Dirichlet α = 0.5, 100 rounds (see the "
    "module docstring of `keras_luar.experiments.presets` for how it departs from the paper's "
    "DistilBERT run).",
    "``ag_news_csv/train.csv`` and ``test.csv`` (`keras_luar.data.agnews`)",
    "the number of clients of the Dirichlet split",
    128,
)
shakespeare = _preset(
    SHAKESPEARE,
    "Shakespeare next-character prediction with a character LSTM (not in the paper).",
    "TFF's ``shakespeare.sqlite`` (`keras_luar.data.shakespeare`)",
    "the number of speaking roles to use (None: all)",
    None,
)


PRESETS: dict[str, Callable[..., Preset]] = {
    "cifar10_resnet20": cifar10_resnet20,
    "cifar100_wrn28": cifar100_wrn28,
    "femnist_cnn": femnist_cnn,
    "agnews_text": agnews_text,
    "shakespeare": shakespeare,
}
