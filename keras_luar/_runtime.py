"""Process hygiene for TFF's local C++ runtime, and TensorFlow's start-up noise.

Importing TensorFlow Federated installs an execution context that, on the first
computation, starts a `worker_binary` subprocess and only stops it when a
Python object is garbage-collected. A process that exits abnormally (an
uncaught signal, `os._exit`, a crashed test worker) leaves that worker running
with PID 1 as its parent, still holding the parent's stdout open, so a shell
pipeline such as `python train.py | tail` never returns.

`install` makes the worker's lifetime follow ours:

* the worker is started with `PR_SET_PDEATHSIG`, so the kernel sends it
  SIGKILL when the thread that started it exits (in TFF 0.87 that is the
  long-lived thread that owns the execution context);
* an `atexit` hook and SIGTERM/SIGHUP handlers (installed only where the
  program has not set its own) stop the workers this process started, and
  only those.

It also keeps the known noise of TensorFlow's C++ logging out of the output
(see `quiet_stderr`): the worker gets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the
environment sets a level, and the grappler lines that TFF's compiler causes in
this process for every computation are dropped. Warnings and errors pass.

Nothing happens at import: keras_luar calls `install` where TFF's runtime or
local workers are first used (the trainer, ``keras_luar.backends``, the
package's TFF-using names such as ``keras_luar.LuarFactory``). Everything here
is idempotent, touches only our own children and imports neither TensorFlow
nor TFF until `install` runs, so the command line can use it before TensorFlow
loads (`worker_binary`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

_WORKER_NAME = "worker_binary"
_PR_SET_PDEATHSIG = 1
_installed = False
_signals_installed = False
_lock = threading.Lock()
_started: list[subprocess.Popen] = []

BIND_WARNING = (
    "TFF's worker_binary listens on every network interface ([::]:{port}); it has no "
    "option to bind one address. Its protocol is neither authenticated nor encrypted: "
    "anyone who can reach this port can run TensorFlow code here. Keep it on a trusted "
    "network (a firewall, a private network or a network namespace)."
)

# TensorFlow C++ log lines that say nothing to a keras_luar user (matched anywhere in
# a line of stderr; everything else passes):
_NOISE = re.compile(
    rb"|".join(
        [
            # TFF's compiler runs Grappler on every computation it compiles, and each
            # run starts a grappler cluster that logs two INFO lines, ...
            rb"grappler/clusters/single_machine\.cc:\d+\] Starting new session",
            rb"grappler/devices\.cc:\d+\] Number of eligible GPUs",
            # ... and an ERROR line for graphs without fetches, which TFF expects.
            rb"grappler/grappler_item_builder\.cc:\d+\] Failed to detect the fetch node",
            # TensorFlow 2.14 registers its CUDA plugins twice at import (a known bug).
            rb"Unable to register cu(?:DNN|FFT|BLAS) factory: Attempting to register factory",
        ]
    )
)
_stderr_lock = threading.RLock()


def worker_binary() -> str | None:
    """The path of TFF's ``worker_binary``, found without importing TFF (or None).

    Returns:
      The file ``tensorflow_federated/data/worker_binary`` of the installed
      ``tensorflow-federated`` package, or None when there is none.
    """
    spec = importlib.util.find_spec("tensorflow_federated")  # locates, does not import
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [
            os.path.join(p, "data", _WORKER_NAME) for p in spec.submodule_search_locations
        ]
    try:
        for file in importlib.metadata.files("tensorflow-federated") or ():
            if file.name == _WORKER_NAME and file.parent.name == "data":
                candidates.append(str(file.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if os.path.isfile(path):
            return path
    return None


def _tf_info_logs_requested() -> bool:
    """Whether the user asked for TensorFlow's C++ info logs (``TF_CPP_MIN_LOG_LEVEL=0``)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() == "0"


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Drops TensorFlow's known noise lines from what is written to stderr inside.

    File descriptor 2 points at a temporary file for the duration (C++ logging
    writes there, not to `sys.stderr`); at the end, every line that is not
    known noise is written to the real stderr, in order. Other threads' output
    of that moment is delayed, not lost. Does nothing when the user asked for
    TensorFlow's info logs (``TF_CPP_MIN_LOG_LEVEL=0``) or stderr has no file
    descriptor.

    Yields:
      Nothing.
    """
    if _tf_info_logs_requested():
        yield
        return
    with _stderr_lock:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        capture = tempfile.TemporaryFile()
        try:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                try:
                    sys.stderr.flush()
                except (AttributeError, OSError, ValueError):
                    pass
                os.dup2(saved, 2)
                capture.seek(0)
                kept = b"".join(
                    line
                    for line in capture.read().splitlines(keepends=True)
                    if not _NOISE.search(line)
                )
                _write_all(2, kept)
        finally:
            os.close(saved)
            capture.close()


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow (if not yet imported) without its known start-up noise."""
    if "tensorflow" in sys.modules:
        return
    with quiet_stderr():
        import tensorflow  # noqa: F401


def _set_parent_death_signal() -> None:  # runs in the child, between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort; the atexit hook still applies
        pass


def _has_fileno(stream) -> bool:
    if stream is None or isinstance(stream, int):
        return True
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


class _WorkerPopen(subprocess.Popen):
    """`subprocess.Popen` that ties a TFF worker's life to its parent."""

    def __init__(self, args, *pargs, **kwargs):
        is_worker = bool(args) and os.path.basename(str(args[0])) == _WORKER_NAME
        if is_worker and sys.platform.startswith("linux") and "preexec_fn" not in kwargs:
            kwargs["preexec_fn"] = _set_parent_death_signal
        if is_worker and kwargs.get("env") is None and len(pargs) < 10:  # env: 10th after args
            # The worker reads its C++ log level when it starts: without one in the
            # environment it prints a dozen info lines (devices, port, CPU features).
            kwargs["env"] = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ}
        if is_worker:
            # TFF hands over sys.stdout/sys.stderr; when those were replaced by objects
            # without a file descriptor (pytest's capsys, some notebook front-ends),
            # Popen fails with "fileno". Inherit our real descriptors instead.
            for key in ("stdout", "stderr"):
                if not _has_fileno(kwargs.get(key)):
                    kwargs[key] = None
        super().__init__(args, *pargs, **kwargs)
        if is_worker:
            _started.append(self)


def start_worker(args: list[str], **kwargs: Any) -> subprocess.Popen:
    """Starts a TFF ``worker_binary`` whose life is tied to this process's.

    The worker gets ``PR_SET_PDEATHSIG`` (Linux), a quiet C++ log level unless
    the environment sets one, and is stopped by `stop_workers` and at exit.

    Args:
      args: The command line; its first item is the path of ``worker_binary``.
      **kwargs: As for `subprocess.Popen`.

    Returns:
      The running process.
    """
    return _WorkerPopen(args, **kwargs)


def forget_worker(process: subprocess.Popen) -> None:
    """Stops tracking a worker that its owner has stopped (and reaped) itself.

    Args:
      process: A process from `start_worker`; one not tracked is ignored.
    """
    if process in _started:
        _started.remove(process)


class _SubprocessShim:
    """Stands in for the `subprocess` module inside TFF's executor factory."""

    Popen = _WorkerPopen

    def __getattr__(self, name):
        return getattr(subprocess, name)


class _QuietGrappler:
    """Stands in for TensorFlow's `tf_optimizer` module inside TFF's graph optimizations."""

    def __init__(self, module):
        self._module = module

    def OptimizeGraph(self, *args, **kwargs):  # noqa: N802 - TensorFlow's name
        with quiet_stderr():
            return self._module.OptimizeGraph(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._module, name)


def _wait_exited(pid: int, timeout: float) -> bool:
    """Waits until `pid` has exited, without reaping it.

    TFF's own `ServiceManager.__del__` later signals and reaps the same child;
    leaving it a zombie until then keeps that call from failing.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            return True
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def stop_workers(timeout: float = 5.0) -> int:
    """Stops every TFF worker process started by this process.

    Args:
      timeout: Seconds to wait for each worker after SIGINT before SIGKILL.

    Returns:
      The number of workers that were still running and got stopped.
    """
    stopped = 0
    for proc in list(_started):
        _started.remove(proc)
        if proc.returncode is not None:
            continue
        try:
            proc.send_signal(signal.SIGINT)
            if not _wait_exited(proc.pid, timeout):
                proc.kill()
                _wait_exited(proc.pid, timeout)
            stopped += 1
        except (ProcessLookupError, OSError):
            pass
    stopped += _stop_stray_children(timeout)
    return stopped


def _stop_stray_children(timeout: float) -> int:
    """Stops worker children started outside the shim (e.g. before it was installed)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        return 0
    try:
        children = psutil.Process().children(recursive=True)
        direct = {c.pid for c in psutil.Process().children()}
    except psutil.Error:
        return 0
    workers = []
    for child in children:
        try:
            if child.name() == _WORKER_NAME and child.status() != psutil.STATUS_ZOMBIE:
                workers.append(child)
        except psutil.Error:
            continue
    for worker in workers:
        try:
            worker.kill()
        except psutil.Error:
            pass
    # Our own children are not reaped (as in `stop_workers`): TFF's ServiceManager
    # signals and reaps its child itself when it restarts it, and fails on a pid that
    # is gone. Grandchildren are waited for (psutil polls them; their parent reaps).
    for worker in workers:
        if worker.pid in direct:
            _wait_exited(worker.pid, timeout)
    psutil.wait_procs([w for w in workers if w.pid not in direct], timeout=timeout)
    return len(workers)


def _at_exit() -> None:
    stop_workers()
    # TFF's ServiceManager.__del__ may run during interpreter teardown, after module
    # globals were cleared, and then prints a spurious traceback. The workers are
    # stopped above, so its clean-up has nothing left to do.
    from keras_luar import _tff_internals  # imported by `install`, which registered this

    _tff_internals.silence_service_manager_teardown()


def _on_signal(signum, frame):  # pragma: no cover - exercised by subprocess tests
    stop_workers(timeout=1.0)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install() -> None:
    """Installs the worker lifetime guards and the log filter. Safe to call more than once.

    Called where keras_luar first uses TFF's runtime or starts workers, never at
    import. Patches two module attributes inside TFF (the `subprocess` of its
    executor factory, the `tf_optimizer` of its graph optimizations), registers
    an `atexit` hook and, from the main thread, SIGTERM/SIGHUP handlers where
    the program has none of its own.
    """
    global _installed, _signals_installed
    with _lock:
        first = not _installed
        _installed = True
        # Signal handlers can only be set from the main thread: a first use from
        # another thread sets them at the next use from the main thread.
        signals = not _signals_installed and threading.current_thread() is threading.main_thread()
        _signals_installed = _signals_installed or signals
    if first:
        from keras_luar import _tff_internals

        _tff_internals.patch_executor_subprocess(_SubprocessShim())
        _tff_internals.patch_grappler(_QuietGrappler)
        atexit.register(_at_exit)
    if signals:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                signal.signal(signum, _on_signal)
