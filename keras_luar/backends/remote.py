"""Runs each round's client work on TFF workers (``worker_binary`` processes).

`WorkerPoolContext` is an `InProcessContext` in which every ``federated_map``
over the clients whose mapped function is a TensorFlow block (local training,
local evaluation, ...) sends each client's call to one of a set of TFF
workers. Everything else stays in this process, the driver: the federated glue,
the aggregation (in client order, from ``zero``, exactly as in process) and the
server's blocks. Hence:

* the result does not depend on how many workers there are or which client
  ran where: every client call gets the same inputs and runs the same block;
* a call that fails because its worker died or became unreachable is simply
  sent again, with the same inputs, to another live worker (or to the same
  address once a worker answers there again). The blocks are pure functions
  of their inputs, so the run ends with the same result as an undisturbed
  one;
* every algorithm of the library runs unchanged.

A call uses TFF's own client (`RemoteExecutor` over a gRPC channel): the
block's proto is sent once per worker and kept there; each call then sends its
argument (the global model and the client's dataset, serialized with its data)
and fetches the result. TFF's `RemoteExecutor` blocks inside its ``async``
methods, so the calls of one ``federated_map`` run in a thread pool, with at
most ``calls_per_worker`` calls in flight per worker.

TFF's worker protocol is neither authenticated nor encrypted, and TFF 0.87's
``worker_binary`` listens on every interface (``[::]:port``); keep workers on
a trusted network.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np
import portpicker
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.executors import (
    executors_errors,
    remote_executor,
    remote_executor_grpc_stub,
)

from keras_luar import _runtime
from keras_luar._validation import check_int
from keras_luar.backends.in_process import BlockFunction, InProcessContext

Struct = tff.structure.Struct
logger = logging.getLogger("keras_luar")

# Where TFF keeps its worker, and what to say about its network exposure; both come
# from `_runtime`, which the command line reads without importing TensorFlow.
WORKER_BINARY = _runtime.worker_binary() or os.path.join(
    os.path.dirname(tff.__file__), "data", "worker_binary"
)
BIND_WARNING = _runtime.BIND_WARNING

_MAX_MESSAGE = 2 * 1000 * 1000 * 1000
_CHANNEL_OPTIONS = [
    ("grpc.max_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ("grpc.max_send_message_length", _MAX_MESSAGE),
]
# A worker that fails a call with these is gone or unusable: the call goes elsewhere.
_CONNECTION_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)
_ADDRESS = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")

__all__ = ["LocalWorkers", "WorkerPoolContext", "WorkersUnavailableError", "check_addresses"]


class WorkersUnavailableError(ConnectionError):
    """No TFF worker answers (at the start of a run, or after every one failed)."""


def check_addresses(workers: Any, argument: str = "workers") -> list[str]:
    """Checks a list of worker addresses; returns it as a list of strings.

    Args:
      workers: A non-empty sequence of ``"host:port"`` strings (an IPv6 host
        in brackets, ``"[::1]:8000"``).
      argument: The argument name to use in the error message.

    Returns:
      The addresses, in order.

    Raises:
      ValueError: For anything else, or a repeated address.

    Examples:
      >>> check_addresses(["host1:8000", "[::1]:8001"])
      ['host1:8000', '[::1]:8001']
      >>> check_addresses("host1:8000")
      Traceback (most recent call last):
      ...
      ValueError: Invalid value for argument `workers`. Expected a non-empty list ...
    """
    expected = (
        f"Invalid value for argument `{argument}`. Expected a non-empty list of distinct "
        '"host:port" strings, e.g. ["host1:8000", "host2:8000"]. '
    )
    if isinstance(workers, str | bytes) or not isinstance(workers, Sequence) or not workers:
        raise ValueError(expected + f"Received: {argument}={workers!r}")
    for address in workers:
        match = _ADDRESS.match(address) if isinstance(address, str) else None
        if match is None or not 0 < int(match.group(1)) < 65536:
            raise ValueError(expected + f"Received: {argument}={list(workers)!r}")
    if len(set(workers)) != len(workers):
        raise ValueError(expected + f"Received: {argument}={list(workers)!r} (repeated)")
    return list(workers)


def _is_ready(address: str, timeout: float, *, refused_is_final: bool = False) -> bool:
    """True when a gRPC server answers at `address` within `timeout` seconds.

    With `refused_is_final`, a refused connection (gRPC's TRANSIENT_FAILURE)
    answers False at once instead of retrying until the timeout.
    """
    channel = grpc.insecure_channel(address, _CHANNEL_OPTIONS)
    done = threading.Event()
    state = []

    def on_change(connectivity):
        if connectivity is grpc.ChannelConnectivity.READY or (
            refused_is_final and connectivity is grpc.ChannelConnectivity.TRANSIENT_FAILURE
        ):
            state.append(connectivity)
            done.set()

    channel.subscribe(on_change, try_to_connect=True)
    try:
        done.wait(timeout)
        return bool(state) and state[0] is grpc.ChannelConnectivity.READY
    finally:
        channel.unsubscribe(on_change)
        channel.close()


class _Stub(remote_executor_grpc_stub.RemoteExecutorGrpcStub):
    """TFF's gRPC stub with a deadline on every call; disposals never raise."""

    def __init__(self, channel: grpc.Channel, timeout: float | None):
        super().__init__(channel)
        group = self._stub
        self._stub = _Deadline(group, timeout)

    def dispose(self, request):
        try:
            return super().dispose(request)
        except (grpc.RpcError, executors_errors.RetryableError):
            return None  # the worker is gone, and its values with it

    def dispose_executor(self, request):
        try:
            return super().dispose_executor(request)
        except (grpc.RpcError, executors_errors.RetryableError):
            return None


class _Deadline:
    def __init__(self, group, timeout):
        self._group = group
        self._timeout = timeout

    def __getattr__(self, name):
        method = getattr(self._group, name)
        return lambda request: method(request, timeout=self._timeout, wait_for_ready=False)


def _sync(coroutine):
    """Runs one of `RemoteExecutor`'s coroutines, which never suspend, to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("A TFF RemoteExecutor call suspended; it was expected to block.")


class _Worker:
    """One worker address: its channel, executor, the blocks sent to it, its load."""

    def __init__(self, address: str, call_timeout: float | None):
        self.address = address
        self.alive = False
        self.in_flight = 0
        self._call_timeout = call_timeout
        self._lock = threading.Lock()
        self._channel = None
        self._executor = None
        self._blocks: dict[int, tuple[Any, Any]] = {}

    def connect(self) -> None:
        with self._lock:
            self._drop()
            self._channel = grpc.insecure_channel(self.address, _CHANNEL_OPTIONS)
            executor = remote_executor.RemoteExecutor(_Stub(self._channel, self._call_timeout))
            executor.set_cardinalities({tff.CLIENTS: 0})
            self._executor = executor
            self.alive = True

    def reset(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        self._blocks.clear()
        self._executor = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def call(self, block: Any, argument: Any) -> Any:
        with self._lock:
            executor = self._executor
            if executor is None:
                raise _Reconnect()
            cached = self._blocks.get(id(block))
        if cached is None or cached[0] is not block:
            comp = _sync(executor.create_value(block.proto, block.type_signature))
            with self._lock:
                if self._executor is executor:
                    self._blocks[id(block)] = (block, comp)
        else:
            comp = cached[1]
        parameter = block.type_signature.parameter
        arg = None
        if parameter is not None:
            arg = _sync(executor.create_value(_to_wire(argument), parameter))
        result = _sync(executor.create_call(comp, arg))
        return _sync(result.compute())


class _Reconnect(Exception):
    """A worker must be connected again before it takes calls."""


class WorkerPoolContext(InProcessContext):
    """An `InProcessContext` that runs the clients' TensorFlow blocks on TFF workers.

    Install it as `InProcessContext` is installed (the trainer does this for
    ``workers=``). Call `connect` first: it fails at once when no worker
    answers.

    Args:
      workers: ``"host:port"`` addresses of running TFF workers (started with
        ``keras-luar worker --port N`` or `LocalWorkers`).
      connect_timeout: Seconds `connect` waits for each worker to answer.
      call_timeout: Seconds one client call may take before its worker counts
        as unreachable and the call is retried elsewhere; None waits forever.
        A call that fails more than three times per worker raises
        `WorkersUnavailableError` instead of being retried forever.
      retry_timeout: Seconds to keep looking for a live worker (re-probing
        every address) once all of them have failed, before giving up.
      calls_per_worker: Client calls in flight per worker at once. TFF's
        worker already trains one client on all its cores, so 1 (default)
        suits one worker per machine.
      device: As for `InProcessContext`: where the driver's blocks run.

    Raises:
      ValueError: For invalid arguments (TypeError for a non-int
        `calls_per_worker`).
    """

    def __init__(
        self,
        workers: Sequence[str],
        *,
        connect_timeout: float = 10.0,
        call_timeout: float | None = 600.0,
        retry_timeout: float = 30.0,
        calls_per_worker: int = 1,
        device: str | None = None,
    ):
        super().__init__(device, trace=False)  # each client call is sent on its own
        self.addresses = check_addresses(workers)
        for name, value in (("connect_timeout", connect_timeout), ("retry_timeout", retry_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected a number of seconds > 0. "
                    f"Received: {name}={value!r}"
                )
        if call_timeout is not None and (
            isinstance(call_timeout, bool)
            or not isinstance(call_timeout, int | float)
            or not call_timeout > 0
        ):
            raise ValueError(
                "Invalid value for argument `call_timeout`. Expected None or a number of "
                f"seconds > 0. Received: call_timeout={call_timeout!r}"
            )
        self.connect_timeout = float(connect_timeout)
        self.retry_timeout = float(retry_timeout)
        self.calls_per_worker = check_int("calls_per_worker", calls_per_worker, 1)
        self._workers = [_Worker(a, call_timeout) for a in self.addresses]
        self._condition = threading.Condition()
        self._probe_lock = threading.Lock()
        self._dispatch = concurrent.futures.ThreadPoolExecutor(
            len(self._workers) * calls_per_worker, thread_name_prefix="keras_luar_worker_call"
        )
        self.remote_calls = 0
        self.retried_calls = 0

    # ---- connection ----------------------------------------------------------------------

    def connect(self) -> list[str]:
        """Connects to every worker that answers within `connect_timeout`.

        Returns:
          The addresses that answered; a warning is logged for the others.

        Raises:
          WorkersUnavailableError: When none answers; the message names every
            address tried and the timeout.
        """
        ready = [
            f.result()
            for f in [
                self._dispatch.submit(
                    _is_ready, w.address, self.connect_timeout, refused_is_final=True
                )
                for w in self._workers
            ]
        ]
        for worker, ok in zip(self._workers, ready, strict=True):
            if ok:
                worker.connect()
        if not any(ready):
            raise WorkersUnavailableError(
                f"No TFF worker answered at {', '.join(self.addresses)} (each refused the "
                f"connection or gave no answer within {self.connect_timeout:g} s). Start one "
                "on each host with `keras-luar worker --port PORT` and check the addresses "
                "and firewalls."
            )
        down = [w.address for w, ok in zip(self._workers, ready, strict=True) if not ok]
        if down:
            logger.warning(
                "TFF worker(s) %s refused the connection or did not answer within %g s; "
                "running on %s.",
                ", ".join(down), self.connect_timeout,
                ", ".join(w.address for w in self._workers if w.alive),
            )  # fmt: skip
        return [w.address for w in self._workers if w.alive]

    @property
    def live_workers(self) -> list[str]:
        """The addresses currently taking calls."""
        return [w.address for w in self._workers if w.alive]

    def close(self) -> None:
        """Closes the connections and the dispatch threads."""
        self._dispatch.shutdown(wait=True)
        for worker in self._workers:
            worker.reset()

    def _revive(self, timeout: float) -> bool:
        """Reconnects dead workers that answer within `timeout`; True if any is alive."""
        with self._probe_lock:
            dead = [w for w in self._workers if not w.alive]
            for worker in dead:
                if _is_ready(worker.address, timeout):
                    try:
                        worker.connect()
                    except (grpc.RpcError, executors_errors.RetryableError):
                        continue
                    logger.warning("TFF worker %s answers again; sending it calls.", worker.address)
            with self._condition:
                self._condition.notify_all()
            return any(w.alive for w in self._workers)

    def _acquire(self) -> _Worker:
        deadline = None
        while True:
            with self._condition:
                alive = [w for w in self._workers if w.alive]
                free = [w for w in alive if w.in_flight < self.calls_per_worker]
                if free:
                    worker = min(free, key=lambda w: w.in_flight)
                    worker.in_flight += 1
                    return worker
                if alive:
                    self._condition.wait(timeout=1.0)
                    continue
            # No live worker: look for one until the retry deadline.
            if deadline is None:
                deadline = time.monotonic() + self.retry_timeout
            if self._revive(timeout=min(1.0, self.retry_timeout)):
                continue
            if time.monotonic() >= deadline:
                raise WorkersUnavailableError(
                    f"Every TFF worker failed and none answered again within "
                    f"{self.retry_timeout:g} s: {', '.join(self.addresses)}."
                )

    def _release(self, worker: _Worker) -> None:
        with self._condition:
            worker.in_flight -= 1
            self._condition.notify_all()

    def _fail(self, worker: _Worker, error: BaseException) -> None:
        with self._condition:
            was_alive = worker.alive
            worker.alive = False
            self._condition.notify_all()
        worker.reset()
        if was_alive:
            others = [w.address for w in self._workers if w.alive]
            logger.warning(
                "TFF worker %s failed (%s); retrying its client calls on %s.",
                worker.address, _describe(error),
                ", ".join(others) if others else "the first worker that answers again",
            )  # fmt: skip

    # ---- calls ---------------------------------------------------------------------------

    def map_clients(self, function: Callable, values: list, pool: Any = None) -> list:
        """Sends each client's call of a TensorFlow block to a worker; results in client order.

        Args:
          function: The mapped function. A `BlockFunction` runs on the
            workers; anything else runs here, as in `InProcessContext`.
          values: One argument per client.
          pool: Unused for remote calls.

        Returns:
          One result per client, in the order of `values`.

        Raises:
          WorkersUnavailableError: When no worker is left to take a call.
        """
        if not isinstance(function, BlockFunction) or not values:
            return super().map_clients(function, values, pool)
        if any(not w.alive for w in self._workers):
            self._revive(timeout=0.2)
        block = function.block
        futures = [self._dispatch.submit(self._call, block, v) for v in values]
        return [f.result() for f in futures]

    def _call(self, block: Any, argument: Any) -> Any:
        stale = 0
        failures = 0
        while True:
            worker = self._acquire()
            try:
                result = worker.call(block, argument)
            except _Reconnect:
                self._fail(worker, ConnectionError("disconnected"))
                continue
            except (grpc.RpcError, executors_errors.RetryableError) as error:
                if _is_connection_error(error):
                    self._fail(worker, error)
                    failures += 1
                    if failures > 3 * len(self._workers):
                        # The call itself seems to break workers, or outlasts `call_timeout`.
                        raise WorkersUnavailableError(
                            f"One client call failed {failures} times on the TFF workers "
                            f"{', '.join(self.addresses)} (last: {_describe(error)}); giving up."
                        ) from error
                    with self._condition:
                        self.retried_calls += 1
                    continue
                # A worker restarted at the same address does not know our executor
                # or values any more: reconnect it once and try again.
                if stale < 1:
                    stale += 1
                    self._fail(worker, error)
                    continue
                raise
            finally:
                self._release(worker)
            with self._condition:
                self.remote_calls += 1
            return _from_wire(result, block.type_signature.result)


def _status(error: BaseException):
    if isinstance(error, executors_errors.RetryableGRPCError):
        error = error.args[0] if error.args else error
    code = getattr(error, "code", None)
    try:
        return code() if callable(code) else None
    except Exception:  # noqa: BLE001 - an RpcError that is not a Call
        return None


def _is_connection_error(error: BaseException) -> bool:
    return _status(error) in _CONNECTION_CODES


def _describe(error: BaseException) -> str:
    code = _status(error)
    if code is not None:
        return code.name
    return type(error).__name__


def _to_wire(value: Any) -> Any:
    """The evaluator's value as TFF's serializer takes it (tensors become numpy arrays)."""
    if isinstance(value, Struct):
        return Struct((n, _to_wire(v)) for n, v in tff.structure.iter_elements(value))
    if isinstance(value, tf.Tensor):
        return value.numpy()
    return value


def _from_wire(value: Any, type_spec: Any) -> Any:
    """A worker's result in the evaluator's representation of `type_spec`."""
    if isinstance(type_spec, tff.StructType):
        elements = tff.structure.to_elements(tff.structure.from_container(value))
        return Struct(
            (name, _from_wire(v, t))
            for (_, v), (name, t) in zip(
                elements, tff.structure.iter_elements(type_spec), strict=True
            )
        )
    if isinstance(type_spec, tff.TensorType):
        return tf.constant(np.asarray(value), dtype=tf.as_dtype(type_spec.dtype))
    return value


# ---- local workers ---------------------------------------------------------------------------


class LocalWorkers:
    """TFF workers on this machine, for tests, benchmarks and a one-machine pool.

    Each worker is a ``worker_binary`` subprocess that the kernel kills when
    the thread that started it exits (``PR_SET_PDEATHSIG``), and that `stop`,
    the ``with`` block and interpreter exit stop, so none outlives this
    process. Start them from a long-lived thread (normally the main thread).

    TFF 0.87's ``worker_binary`` listens on every interface, whatever
    address you connect to; a warning saying so is logged for each worker.

    Args:
      count: How many workers to start.
      ports: Their ports; None picks free ones.
      max_concurrent_computation_calls: Passed to each worker; -1 (default)
        means no limit.
      ready_timeout: Seconds to wait for each worker to answer.
      log: Where the workers' output goes: None discards it, a path appends
        it to that file.

    Raises:
      ValueError: For invalid arguments.
      RuntimeError: When a worker does not answer within `ready_timeout`.

    Examples:
      >>> with LocalWorkers(2) as workers:  # doctest: +SKIP
      ...     trainer = FederatedTrainer(model, loss=loss, workers=workers.addresses)
    """

    def __init__(
        self,
        count: int = 1,
        *,
        ports: Sequence[int] | None = None,
        max_concurrent_computation_calls: int = -1,
        ready_timeout: float = 30.0,
        log: str | None = None,
    ):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(
                f"Invalid value for argument `count`. Expected an int >= 1. Received: count={count!r}"
            )
        if ports is not None and (
            len(ports) != count
            or any(
                isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536 for p in ports
            )
        ):
            raise ValueError(
                f"Invalid value for argument `ports`. Expected None or {count} ints in 1..65535. "
                f"Received: ports={ports!r}"
            )
        _runtime.install()
        if not os.path.isfile(WORKER_BINARY):
            raise RuntimeError(f"TFF's worker binary is missing: expected it at {WORKER_BINARY}.")
        self.ports = (
            list(ports)
            if ports is not None
            else [portpicker.pick_unused_port() for _ in range(count)]
        )
        self.addresses = [f"localhost:{p}" for p in self.ports]
        self._max_calls = int(max_concurrent_computation_calls)
        self._ready_timeout = float(ready_timeout)
        self._log = log
        self._processes: list[subprocess.Popen | None] = [None] * count
        try:
            for index in range(count):
                self.start(index)
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> list[int | None]:
        """The process ids of the workers (None for one that is stopped)."""
        return [p.pid if p is not None and p.poll() is None else None for p in self._processes]

    def start(self, index: int) -> None:
        """Starts worker `index` (again) on its port and waits until it answers.

        Args:
          index: Which worker, from 0.

        Raises:
          RuntimeError: When it does not answer within ``ready_timeout``.
        """
        _runtime.install()
        process = self._processes[index]
        if process is not None and process.poll() is None:
            return
        port = self.ports[index]
        logger.warning(BIND_WARNING.format(port=port))
        out = subprocess.DEVNULL if self._log is None else open(self._log, "ab")  # noqa: SIM115
        try:
            process = _runtime._WorkerPopen(
                [WORKER_BINARY, f"--port={port}",
                 f"--max_concurrent_computation_calls={self._max_calls}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self._processes[index] = process
        deadline = time.monotonic() + self._ready_timeout
        while not _is_ready(self.addresses[index], 0.5):
            if process.poll() is not None or time.monotonic() >= deadline:
                self.kill(index)
                raise RuntimeError(
                    f"The TFF worker on port {port} did not answer within "
                    f"{self._ready_timeout:g} s (exit status {process.returncode})."
                )

    def kill(self, index: int) -> None:
        """Kills worker `index` at once (SIGKILL), as a crash would; waits for it.

        Args:
          index: Which worker, from 0.
        """
        process = self._processes[index]
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        if process in _runtime._started:
            _runtime._started.remove(process)

    def stop(self, timeout: float = 5.0) -> None:
        """Stops every worker (SIGINT, then SIGKILL after `timeout` seconds).

        Args:
          timeout: Seconds to wait for each worker to exit on SIGINT.
        """
        for index, process in enumerate(self._processes):
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            self.kill(index)

    def __enter__(self) -> LocalWorkers:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # pragma: no cover - a safety net; `stop` is the way
        try:
            self.stop(timeout=1.0)
        except Exception:  # noqa: BLE001
            pass
