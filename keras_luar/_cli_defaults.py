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
by ``keras_luar.algorithms.registry``, which imports no TensorFlow, and are the same
objects ``keras_luar.compare`` uses.
"""

from __future__ import annotations

from keras_luar.algorithms.registry import BUILTIN_FIELDS
from keras_luar.algorithms.registry import DEFAULT_METHODS as DEFAULT_METHODS
from keras_luar.algorithms.registry import LUAR_COMPATIBLE as LUAR_COMPATIBLE

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
