"""`LocalWorkers`: TFF workers started on this machine, tied to this process's life.

For tests, benchmarks and a one-machine pool. TFF's worker protocol is
neither authenticated nor encrypted, and TFF 0.87's ``worker_binary`` listens
on every interface (``[::]:port``); keep workers on a trusted network.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence

import portpicker
import tensorflow_federated as tff

from keras_luar import _runtime
from keras_luar.backends.remote.connection import is_ready

logger = logging.getLogger("keras_luar")

# Where TFF keeps its worker, and what to say about its network exposure; both come
# from `_runtime`, which the command line reads without importing TensorFlow.
WORKER_BINARY = _runtime.worker_binary() or os.path.join(
    os.path.dirname(tff.__file__), "data", "worker_binary"
)
BIND_WARNING = _runtime.BIND_WARNING


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
            process = _runtime.start_worker(
                [WORKER_BINARY, f"--port={port}",
                 f"--max_concurrent_computation_calls={self._max_calls}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self._processes[index] = process
        deadline = time.monotonic() + self._ready_timeout
        while not is_ready(self.addresses[index], 0.5):
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
        _runtime.forget_worker(process)

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
