"""`WorkerPoolContext`: the clients' TensorFlow work on a pool of TFF workers.

`WorkerPoolContext` is an `InProcessContext` in which every ``federated_map``
over the clients whose mapped function is a TensorFlow block sends each
client's call to one of the workers (`keras_luar.backends.remote`). This
module keeps the pool: which workers are alive, how many calls each has in
flight, and what happens when a call fails (it is sent again, with the same
inputs, to another live worker, or to the same address once a worker answers
there again). TFF's `RemoteExecutor` blocks inside its ``async`` methods, so
the calls of one ``federated_map`` run in a thread pool, with at most
``calls_per_worker`` calls in flight per worker.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from keras_luar._validation import check_int
from keras_luar.backends.in_process import BlockFunction, InProcessContext
from keras_luar.backends.in_process.values import from_wire
from keras_luar.backends.remote.connection import (
    CALL_ERRORS,
    Reconnect,
    Worker,
    check_addresses,
    describe,
    is_connection_error,
    is_ready,
)

logger = logging.getLogger("keras_luar")


class WorkersUnavailableError(ConnectionError):
    """No TFF worker answers (at the start of a run, or after every one failed)."""


def _check_seconds(name: str, value: Any, *, none_ok: bool = False) -> None:
    if none_ok and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected {'None or ' if none_ok else ''}"
            f"a number of seconds > 0. Received: {name}={value!r}"
        )


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
        _check_seconds("connect_timeout", connect_timeout)
        _check_seconds("retry_timeout", retry_timeout)
        _check_seconds("call_timeout", call_timeout, none_ok=True)
        self.connect_timeout = float(connect_timeout)
        self.retry_timeout = float(retry_timeout)
        self.calls_per_worker = check_int("calls_per_worker", calls_per_worker, 1)
        self._workers = [Worker(a, call_timeout) for a in self.addresses]
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
                    is_ready, w.address, self.connect_timeout, refused_is_final=True
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
                if is_ready(worker.address, timeout):
                    try:
                        worker.connect()
                    except CALL_ERRORS:
                        continue
                    logger.warning("TFF worker %s answers again; sending it calls.", worker.address)
            with self._condition:
                self._condition.notify_all()
            return any(w.alive for w in self._workers)

    def _acquire(self) -> Worker:
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

    def _release(self, worker: Worker) -> None:
        with self._condition:
            worker.in_flight -= 1
            self._condition.notify_all()

    def _fail(self, worker: Worker, error: BaseException) -> None:
        with self._condition:
            was_alive = worker.alive
            worker.alive = False
            self._condition.notify_all()
        worker.reset()
        if was_alive:
            others = [w.address for w in self._workers if w.alive]
            logger.warning(
                "TFF worker %s failed (%s); retrying its client calls on %s.",
                worker.address, describe(error),
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
            except Reconnect:
                self._fail(worker, ConnectionError("disconnected"))
                continue
            except CALL_ERRORS as error:
                if is_connection_error(error):
                    self._fail(worker, error)
                    failures += 1
                    if failures > 3 * len(self._workers):
                        # The call itself seems to break workers, or outlasts `call_timeout`.
                        raise WorkersUnavailableError(
                            f"One client call failed {failures} times on the TFF workers "
                            f"{', '.join(self.addresses)} (last: {describe(error)}); giving up."
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
            return from_wire(result, block.type_signature.result)
