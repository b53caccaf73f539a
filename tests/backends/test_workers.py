"""Rounds on TFF workers (`FederatedTrainer(workers=...)`), on loopback.

Each client call of a round runs on a worker while the driver aggregates in
client order, so the run matches local execution, and a worker that dies
mid-round changes nothing but the time: its calls are retried elsewhere with
the same inputs. Every worker a test starts is gone when it ends.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import time

import numpy as np
import portpicker
import psutil
import pytest
import tensorflow as tf
import test_backends
from test_trainer import _fit, _model, _trainer

from keras_luar import backends
from keras_luar.backends import remote

ROUNDS = 3


def _assert_gone(pids):
    for pid in pids:
        if pid is None:
            continue
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        assert process.status() == psutil.STATUS_ZOMBIE, f"worker {pid} still runs"


@pytest.fixture
def two_workers():
    workers = backends.LocalWorkers(2)
    pids = list(workers.pids)
    assert all(pids)
    try:
        yield workers
    finally:
        workers.stop()
        _assert_gone(pids)


@pytest.fixture
def contexts(monkeypatch):
    """Records the trainer's `WorkerPoolContext`s (short retry timeout for the tests)."""
    made = []

    class Recorded(backends.WorkerPoolContext):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("retry_timeout", 3.0)
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(backends, "WorkerPoolContext", Recorded)
    return made


def _run(**options):
    trainer = _trainer(_model(), **options)
    history = _fit(trainer, rounds=ROUNDS)
    return trainer, history.history, [w.copy() for w in trainer.model.get_weights()]


def _without_time(history):
    return {k: v for k, v in history.items() if k != "round_time"}


def test_two_workers_give_the_result_of_local_execution(two_workers, contexts):
    _, want, want_weights = _run(algorithm="fedluar", backend="tensorflow")
    trainer, got, got_weights = _run(algorithm="fedluar", workers=two_workers.addresses)
    assert trainer.backend == "tensorflow"
    (context,) = contexts
    # Every client's training ran on a worker (3 rounds x 4 clients).
    assert context.remote_calls >= ROUNDS * 4 and context.retried_calls == 0
    assert set(got) == set(want)
    assert got["recycled_layers"] == want["recycled_layers"]
    for key in ("upload_params", "upload_bytes", "comm_cost", "num_recycled"):
        assert got[key] == want[key], key
    for key in ("loss", "accuracy", "layer_scores"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for g, w in zip(got_weights, want_weights, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_secure_summation_runs_through_the_workers(two_workers, contexts):
    # The pool compiles as the in-process backend does, secure sums simulated included.
    from test_privacy_budget_trainer import _secure_mean

    options = dict(algorithm="fedluar", client_weighting="uniform")
    _, want, want_weights = _run(**options, inner_aggregator=_secure_mean(), backend="tensorflow")
    _, got, got_weights = _run(
        **options, inner_aggregator=_secure_mean(), workers=two_workers.addresses
    )
    (context,) = contexts
    assert context.remote_calls >= ROUNDS * 4
    for key in ("recycled_layers", "upload_bytes", "comm_cost"):
        assert got[key] == want[key], key
    for g, w in zip(got_weights, want_weights, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_a_worker_killed_mid_round_changes_nothing(two_workers, contexts, monkeypatch, caplog):
    _, want, want_weights = _run(algorithm="fedluar", workers=two_workers.addresses)
    # In round 2, kill worker 0 (SIGKILL) just before its 2nd client call: that call
    # fails in flight while the round's other calls are done or under way elsewhere.
    victim = two_workers.addresses[0]
    armed = {"on": False, "calls": 0}
    call = remote.connection.Worker.call

    def killing_call(self, block, argument):
        if armed["on"] and self.address == victim:
            armed["calls"] += 1
            if armed["calls"] == 2:
                two_workers.kill(0)
        return call(self, block, argument)

    class Arm(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            armed["on"] = epoch == 1

    monkeypatch.setattr(remote.connection.Worker, "call", killing_call)
    trainer = _trainer(_model(), algorithm="fedluar", workers=two_workers.addresses)
    with caplog.at_level(logging.WARNING, logger="keras_luar"):
        got = _fit(trainer, rounds=ROUNDS, callbacks=[Arm()]).history
    got_weights = trainer.model.get_weights()
    assert two_workers.pids[0] is None
    context = contexts[-1]
    assert context.retried_calls >= 1
    assert context.live_workers == [two_workers.addresses[1]]
    assert any(f"TFF worker {victim} failed" in r.getMessage() for r in caplog.records)
    # The retried call had the same inputs: the run is the undisturbed one, bit for bit.
    assert _without_time(got) == _without_time(want)
    for g, w in zip(got_weights, want_weights, strict=True):
        np.testing.assert_array_equal(g, w)


def test_every_worker_dead_raises_instead_of_hanging(two_workers, contexts):
    class KillAll(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                two_workers.kill(0)
                two_workers.kill(1)

    trainer = _trainer(
        _model(), algorithm="fedavg", num_recycled_layers=None, workers=two_workers.addresses
    )
    began = time.monotonic()
    with pytest.raises(backends.WorkersUnavailableError, match="Every TFF worker failed"):
        _fit(trainer, rounds=ROUNDS, callbacks=[KillAll()])
    assert time.monotonic() - began < 60
    assert len(contexts[0].live_workers) == 0


def test_unreachable_workers_fail_before_any_round():
    addresses = [
        f"localhost:{portpicker.pick_unused_port()}",
        f"127.0.0.1:{portpicker.pick_unused_port()}",
    ]
    rounds = []

    class Count(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            rounds.append(epoch)

    trainer = _trainer(_model(), workers=addresses)
    began = time.monotonic()
    with pytest.raises(backends.WorkersUnavailableError) as raised:
        _fit(trainer, callbacks=[Count()])
    assert time.monotonic() - began < 10  # refused connections fail at once
    message = str(raised.value)
    assert all(a in message for a in addresses) and "10 s" in message
    assert rounds == []


def test_a_restarted_worker_takes_calls_again(two_workers, contexts):
    class Restart(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                two_workers.kill(0)
                two_workers.kill(1)
                two_workers.start(1)  # same port: the driver finds it again

    _, want, want_weights = _run(
        algorithm="fedavg", num_recycled_layers=None, workers=two_workers.addresses
    )
    trainer = _trainer(
        _model(), algorithm="fedavg", num_recycled_layers=None, workers=two_workers.addresses
    )
    got = _fit(trainer, rounds=ROUNDS, callbacks=[Restart()]).history
    assert _without_time(got) == _without_time(want)
    for g, w in zip(trainer.model.get_weights(), want_weights, strict=True):
        np.testing.assert_array_equal(g, w)
    assert contexts[-1].live_workers == [two_workers.addresses[1]]


@pytest.mark.parametrize(
    "workers",
    ["localhost:8000", [], ["localhost"], ["host:0"], ["host:8000", "host:8000"], [8000]],
)
def test_invalid_workers_argument(workers):
    with pytest.raises(
        ValueError, match=r"Invalid value for argument `workers`\. Expected .*host:port"
    ):
        _trainer(_model(), workers=workers)


def test_workers_need_the_in_process_driver():
    with pytest.raises(
        ValueError, match="Invalid value for argument `backend`.*Received: backend='tff'"
    ):
        _trainer(_model(), backend="tff", workers=["localhost:8000"])


def test_worker_command_warns_and_listens_on_every_interface():
    port = portpicker.pick_unused_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_luar.cli", "worker", "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not remote.connection.is_ready(f"localhost:{port}", 0.5):
            assert process.poll() is None and time.monotonic() < deadline
        # The launcher became the worker (exec), so nothing else needs stopping.
        assert psutil.Process(process.pid).name() == "worker_binary"
        listening = [
            c.laddr.ip
            for c in psutil.Process(process.pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert listening and all(ip in ("::", "0.0.0.0") for ip in listening), listening
    finally:
        process.kill()
        process.wait(30)
    warning = process.stderr.read().decode()
    process.stderr.close()
    assert "listens on every network interface" in warning
    assert "neither authenticated nor encrypted" in warning
    _assert_gone([process.pid])


# `keras-luar worker` with exec replaced by a print: what it would run, and what it loaded.
LAUNCH_ONLY = """
import os, sys
from keras_luar import cli

def execv(path, argv):
    loaded = [m for m in ("tensorflow", "tensorflow_federated") if m in sys.modules]
    print("exec", path, *argv[1:], "loaded", *loaded, flush=True)
    sys.exit(0)

os.execv = execv
cli.main(["worker", "--port", "8123", "--max-concurrent-computation-calls", "2"])
"""


def test_worker_command_finds_the_binary_without_importing_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH_ONLY], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The file TFF's own executor factory starts (found here by importing TFF).
    import tensorflow_federated as tff

    binary = os.path.join(os.path.dirname(tff.__file__), "data", "worker_binary")
    assert os.path.realpath(remote.WORKER_BINARY) == os.path.realpath(binary)
    words = result.stdout.split()
    assert words[0] == "exec" and os.path.realpath(words[1]) == os.path.realpath(binary)
    assert words[2:] == ["--port=8123", "--max_concurrent_computation_calls=2", "loaded"]
    assert "listens on every network interface" in result.stderr


def test_local_workers_validate_and_stop_at_exit(tmp_path):
    with pytest.raises(ValueError, match="Invalid value for argument `count`"):
        backends.LocalWorkers(0)
    with pytest.raises(ValueError, match="Invalid value for argument `ports`"):
        backends.LocalWorkers(2, ports=[8000])
    # A Python process that starts workers and is then killed leaves none behind.
    script = (
        "import sys, time\n"
        "from keras_luar.backends import LocalWorkers\n"
        "w = LocalWorkers(2)\n"
        "print(*w.pids, flush=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    try:
        pids = [int(p) for p in process.stdout.readline().split()]
        assert len(pids) == 2 and all(psutil.pid_exists(p) for p in pids)
    finally:
        process.kill()
        process.wait(30)
        process.stdout.close()
    gone = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10)[
        1
    ]
    assert not gone, "a worker outlived its parent"


def test_context_reports_invalid_options():
    with pytest.raises(ValueError, match="Invalid value for argument `calls_per_worker`"):
        backends.WorkerPoolContext(["localhost:8000"], calls_per_worker=0)
    with pytest.raises(ValueError, match="Invalid value for argument `call_timeout`"):
        backends.WorkerPoolContext(["localhost:8000"], call_timeout=-1)
    with pytest.raises(ValueError, match="Invalid value for argument `connect_timeout`"):
        functools.partial(backends.WorkerPoolContext, ["localhost:8000"])(connect_timeout=0)


# FedAvg, FedProx and FedOpt share FedLUAR's process layout (tested above); these
# four have layouts of their own (client state, schedules, quantized sends).
@pytest.mark.parametrize("case", ["fedlama", "fedpart", "fedpaq+luar", "lbgm"])
def test_other_algorithms_on_workers_match_local_execution(case, two_workers, contexts):
    options = test_backends.CASES[case]
    want = test_backends._run("tensorflow", options)
    got = test_backends._run("tensorflow", dict(options, workers=two_workers.addresses))
    assert contexts[-1].remote_calls > 0
    if case in test_backends.STOCHASTIC:  # seeded by the update's bits: accounting only
        for key in test_backends.EXACT:
            assert got[0][key] == want[0][key], key
        return
    test_backends._assert_same_run(want, got)
