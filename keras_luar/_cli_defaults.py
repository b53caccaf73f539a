"""What the `keras-luar` command needs before TensorFlow loads: names and defaults.

The command line parses its arguments, prints ``--help`` and rejects bad values
without importing TensorFlow (which takes seconds). These values are copies of
what the TensorFlow-side modules define; ``tests/cli/test_cli.py`` checks every one
against its source, so they cannot drift apart:

* `PRESETS`: ``keras_luar.presets.PRESETS`` (names, in order);
* `DIGITS_SETUP`: the defaults of ``keras_luar.quickstart.DigitsSetup``;
* `BACKENDS`: ``keras_luar.backends.BACKENDS``;
* `DIGITS_MODELS`: ``keras_luar.experiments.digits.DIGITS_MODELS`` (names, in order);
* `PROGRESS_FILE`: the checkpoint's progress file (``keras_luar.training.checkpoint``).

The built-in methods' names and fields (`LUAR_COMPATIBLE`, `DEFAULT_METHODS`,
`SERVER_LEARNING_RATE`) are read from ``keras_luar/algorithms/methods.toml``
(``keras_luar.algorithms.registry``), which imports no TensorFlow; ``keras_luar.compare``
derives the same names from the registered specs.
"""

from __future__ import annotations

from keras_luar.algorithms.registry import BUILTIN_FIELDS

_METHODS = BUILTIN_FIELDS.items()
LUAR_COMPATIBLE: tuple[str, ...] = tuple(n for n, f in _METHODS if f.get("luar") == "optional")
# The comparison's table: the methods without +luar, then each one LUAR stacks on, alone
# and with LUAR (as `keras_luar.compare.DEFAULT_METHODS`).
DEFAULT_METHODS: tuple[str, ...] = (
    *(n for n, f in _METHODS if n not in LUAR_COMPATIBLE and f.get("in_comparison", True)),
    *(
        m
        for n in LUAR_COMPATIBLE
        if BUILTIN_FIELDS[n].get("in_comparison", True)
        for m in (n, f"{n}+luar")
    ),
)
# FedOpt's server SGD learning rate in `keras-luar compare` (the paper's FEMNIST setting).
SERVER_LEARNING_RATE: float = BUILTIN_FIELDS["fedopt"]["comparison_options"]["server_learning_rate"]
PRESETS: tuple[str, ...] = (
    "cifar10_resnet20",
    "cifar100_wrn28",
    "femnist_cnn",
    "agnews_text",
    "shakespeare",
)
DIGITS_SETUP: dict[str, int | float] = {
    "rounds": 30,
    "num_clients": 32,
    "clients_per_round": 8,
    "alpha": 0.5,
    "local_steps": 20,
    "batch_size": 20,
    "learning_rate": 0.05,
}
BACKENDS: tuple[str, ...] = ("auto", "tff", "tensorflow")
DIGITS_MODELS: tuple[str, ...] = ("cnn", "bn_cnn")
# In a --checkpoint-dir: the number of rounds saved, read when a run is interrupted.
PROGRESS_FILE = "progress.json"
