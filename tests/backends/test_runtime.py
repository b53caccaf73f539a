"""TFF's worker_binary must never outlive the Python process that started it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

# TFF code that uses keras_luar (as the README's LuarFactory example does) and then
# runs a TFF computation directly. `import keras_luar` alone installs nothing (see
# test_import_installs_nothing); using keras_luar's TFF parts sets up the guards.
RUN_COMPUTATION = """
import numpy as np, tensorflow_federated as tff
import keras_luar
factory = keras_luar.LuarFactory(1)
@tff.tensorflow.computation(np.float32)
def add_one(x):
    return x + 1
print("result", add_one(1.0), flush=True)
"""

# A LuarFactory used without `with_global_weight_norms` must say so from the worker.
UNWRAPPED_LUAR = """
value_type = tff.types.to_type([(np.float32, (2, 2)), (np.float32, (2, 2))])
process = keras_luar.LuarFactory(1).create(value_type, tff.TensorType(np.float32))
values = [[np.ones((2, 2), np.float32)] * 2] * 2
out = process.next(process.initialize(), values, [1.0, 1.0])
print("missing", out.measurements["luar"]["weight_norms_missing"], flush=True)
"""


def _orphan_workers(since: float) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "ppid", "create_time", "status"]):
        info = proc.info
        if (
            info["name"] == "worker_binary"
            and info["ppid"] == 1
            and info["create_time"] >= since - 1
            and info["status"] != psutil.STATUS_ZOMBIE
        ):
            found.append(proc)
    return found


def _pipeline(script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `python -c script | cat` in a shell, as a user's pipeline would."""
    command = f"{sys.executable} -c {_quote(script)} 2>&1 | cat"
    return subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=timeout, check=False
    )


def _quote(script: str) -> str:
    return "'" + script.replace("'", "'\"'\"'") + "'"


@pytest.mark.parametrize(
    "ending",
    [
        UNWRAPPED_LUAR,
        "import os; os._exit(0)",
        "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
    ],
    ids=["normal-exit", "os-_exit", "sigterm"],
)
def test_pipeline_returns_and_no_worker_outlives_the_process(ending):
    start = time.time()
    script = textwrap.dedent(RUN_COMPUTATION) + "\n" + ending
    try:
        result = _pipeline(script)
    except subprocess.TimeoutExpired:
        pytest.fail("`python -c ... | cat` did not return: a TFF worker kept the pipe open")
    finally:
        leaked = _orphan_workers(start)
        for proc in leaked:
            proc.kill()
    assert "result 2.0" in result.stdout
    assert not leaked, f"leaked worker_binary processes: {[p.pid for p in leaked]}"
    if ending is UNWRAPPED_LUAR:
        assert "missing True" in result.stdout
        assert "with_global_weight_norms" in result.stdout  # the worker's warning, via stderr


def test_stop_workers_stops_our_worker():
    import numpy as np
    import tensorflow_federated as tff

    from keras_luar import _runtime

    @tff.tensorflow.computation(np.float32)
    def add_one(x):
        return x + 1

    assert add_one(1.0) == 2.0
    workers = [c for c in psutil.Process(os.getpid()).children() if c.name() == "worker_binary"]
    assert workers, "the computation should have started a worker"
    _runtime.stop_workers()
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    # TFF restarts its worker on demand after it was stopped.
    assert add_one(2.0) == 3.0


IMPORT_ONLY = """
import atexit, signal, sys
import tensorflow_federated as tff
from tensorflow_federated.python.core.environments.tensorflow_backend import graph_optimizations
from tensorflow_federated.python.core.impl.executor_stacks import executor_factory

def snapshot():
    return (
        [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)],
        atexit._ncallbacks(),
        executor_factory.subprocess,
        graph_optimizations.tf_optimizer,
    )

before = snapshot()
import keras_luar
print("unchanged" if snapshot() == before else f"changed: {before} -> {snapshot()}")
keras_luar.FederatedTrainer  # a part that runs TFF computations: now the guards are set
after = snapshot()
print("terminate", after[0][1] is not before[0][1], "hangup", after[0][2] is not before[0][2])
print("interrupt unchanged", after[0][0] is before[0][0])
print("patched", type(after[2]).__name__, type(after[3]).__name__)
"""


def test_import_installs_nothing():
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ONLY],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "unchanged"
    # ... and the first use of a TFF part installs the guards (SIGINT stays Python's).
    assert lines[1:] == [
        "terminate True hangup True",
        "interrupt unchanged True",
        "patched _SubprocessShim _QuietGrappler",
    ]


# ---- quiet by default --------------------------------------------------------------------

# The README's order: TensorFlow first, so its C++ log level is set before keras_luar
# can choose one. Everything after "imported" must be the program's own output.
TF_FIRST_FIT = """
import sys, warnings
import numpy as np
import tensorflow as tf
import keras_luar
print("imported", file=sys.stderr, flush=True)
rng = np.random.default_rng(0)
x = rng.normal(size=(60, 4)).astype("float32")
y = rng.integers(0, 2, size=60)
model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(4),
                             tf.keras.layers.Dense(2)])
trainer = keras_luar.FederatedTrainer(
    model, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    num_recycled_layers=1, local_steps=2, batch_size=5, seed=0, backend="tff")
history = trainer.fit((x, y, [list(range(i, 60, 3)) for i in range(3)]), rounds=3,
                      clients_per_round=2, verbose=0)
warnings.warn("a real warning")
print("rounds", len(history.history["loss"]), flush=True)
"""
NOISE = (
    "Starting new session",  # a grappler cluster per computation TFF compiles, ...
    "Number of eligible GPUs",  # ... which also counts GPUs,
    "Failed to detect the fetch node",  # and an ERROR for graphs without fetches
    "session_provider.cc",  # the TFF worker's own start-up lines
    "ExecutorService started",
    "cpu_feature_guard",
)


def test_a_fit_prints_no_tensorflow_noise_when_tensorflow_was_imported_first():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-c", TF_FIRST_FIT], capture_output=True, text=True, timeout=300,
        env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "rounds 3" in result.stdout
    before, marker, after = result.stderr.partition("imported\n")
    assert marker, result.stderr
    # TensorFlow's own import, before keras_luar was imported, logs at level 0 ...
    assert "cpu_feature_guard" in before
    # ... and from there on the only output is the program's own: the warning.
    for noise in NOISE:
        assert noise not in after, after
    assert after.splitlines() == ["<string>:17: UserWarning: a real warning"], after


def test_quiet_stderr_drops_only_the_known_noise(capfd):
    from keras_luar import _runtime

    noise = (
        b"2026-01-01 00:00:00.000001: I tensorflow/core/grappler/clusters/single_machine.cc:361]"
        b" Starting new session\n"
    )
    real = b"2026-01-01 00:00:00.000002: E tensorflow/core/kernels/foo.cc:1] a real error\n"
    with _runtime.quiet_stderr():
        os.write(2, noise + real + noise + b"no newline at the end")
    assert capfd.readouterr().err == real.decode() + "no newline at the end"
    # TF_CPP_MIN_LOG_LEVEL=0 asks for TensorFlow's info logs: nothing is dropped.
    os.environ["TF_CPP_MIN_LOG_LEVEL"], level = "0", os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    try:
        with _runtime.quiet_stderr():
            os.write(2, noise)
    finally:
        if level is None:
            del os.environ["TF_CPP_MIN_LOG_LEVEL"]
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = level
    assert capfd.readouterr().err == noise.decode()
