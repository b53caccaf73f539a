"""Process hygiene for TFF's local C++ runtime.

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

Nothing happens at import: keras_luar calls `install` where TFF's runtime or
local workers are first used (the trainer, ``keras_luar.backends``, the
package's TFF-using names such as ``keras_luar.LuarFactory``). Everything here
is idempotent, touches only our own children and imports neither TensorFlow
nor TFF until `install` runs.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

_WORKER_NAME = "worker_binary"
_PR_SET_PDEATHSIG = 1
_installed = False
_signals_installed = False
_lock = threading.Lock()
_started: list[subprocess.Popen] = []


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


class _SubprocessShim:
    """Stands in for the `subprocess` module inside TFF's executor factory."""

    Popen = _WorkerPopen

    def __getattr__(self, name):
        return getattr(subprocess, name)


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
    import gc

    for obj in gc.get_objects():
        cls = type(obj)
        if cls.__name__ == "ServiceManager" and cls.__module__.endswith("executor_factory"):
            cls.__del__ = lambda self: None


def _on_signal(signum, frame):  # pragma: no cover - exercised by subprocess tests
    stop_workers(timeout=1.0)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install() -> None:
    """Installs the worker lifetime guards. Safe to call more than once.

    Called where keras_luar first uses TFF's runtime or starts workers, never at
    import. Patches the `subprocess` of TFF's executor factory, registers an
    `atexit` hook and, from the main thread, SIGTERM/SIGHUP handlers where the
    program has none of its own.
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
        from tensorflow_federated.python.core.impl.executor_stacks import executor_factory

        executor_factory.subprocess = _SubprocessShim()
        atexit.register(_at_exit)
    if signals:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                signal.signal(signum, _on_signal)
