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
        "patched _SubprocessShim module",
    ]
