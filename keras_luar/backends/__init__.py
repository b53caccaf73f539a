"""Where a `FederatedTrainer`'s rounds execute.

Two backends run the same TFF computations, built once by the same code:

* ``"tff"``: TFF's own C++ runtime (a ``worker_binary`` subprocess). It runs
  on the CPU only, serializes each round's arguments (state and client
  datasets) to the worker, and is the reference.
* ``"tensorflow"``: `InProcessContext`, which runs the computations in this
  Python process's TensorFlow runtime, on the GPU when TensorFlow sees one,
  handing client datasets over without serializing them.

With ``FederatedTrainer(workers=[...])`` the rounds run through
`WorkerPoolContext`, the in-process driver that sends each client's
TensorFlow work to TFF workers (see ``docs/howto/workers.md``).

Secure summation (`tff.aggregators.SecureSumFactory`, e.g. inside
`tff.learning.secure_aggregator()`) runs on both: TFF 0.87's C++ runtime has
no secure-sum intrinsic, so each computation that holds one is run as TFF's
own test backend runs it, with the secure sums replaced by plain sums of the
same integer encodings (`SecureSumSimulation`).

``"auto"`` (the default) picks ``"tensorflow"``, on a GPU and on a CPU alike:
``benchmarks/round_time.py`` and ``benchmarks/many_clients.py`` measure it
faster than TFF's runtime on a CPU at every workload they time. ``"tff"`` stays
the reference: the parity tests hold the in-process path to it. Both give the
same History (the same recycled layers every round) and weights equal up to
floating-point rounding; the tests check it for every algorithm.

Examples:
  >>> resolve_backend("tff")
  'tff'
  >>> resolve_backend("auto")
  'tensorflow'
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow_federated as tff

from keras_luar import _runtime, _tff_internals
from keras_luar.backends.in_process import BlockFunction, InProcessContext
from keras_luar.backends.remote import (
    LocalWorkers,
    WorkerPoolContext,
    WorkersUnavailableError,
    check_addresses,
)

BACKENDS = ("auto", "tff", "tensorflow")

__all__ = [
    "BACKENDS",
    "BlockFunction",
    "InProcessContext",
    "LocalWorkers",
    "SecureSumSimulation",
    "WorkerPoolContext",
    "WorkersUnavailableError",
    "check_addresses",
    "execution",
    "resolve_backend",
]


def resolve_backend(backend: str) -> str:
    """Checks a ``backend=`` value; returns ``"tff"`` or ``"tensorflow"``.

    Args:
      backend: ``"auto"``, ``"tff"`` or ``"tensorflow"``.

    Returns:
      The backend to use: ``"auto"`` becomes ``"tensorflow"``, the faster of
      the two on a CPU as on a GPU.

    Raises:
      ValueError: For any other value.
    """
    _runtime.install()  # a backend is chosen: TFF's runtime is about to be used
    if backend not in BACKENDS:
        raise ValueError(
            f"Invalid value for argument `backend`. Expected one of {BACKENDS}. "
            f"Received: backend={backend!r}"
        )
    if backend == "auto":
        return "tensorflow"
    return backend


class SecureSumSimulation(tff.framework.SyncContext):
    """Runs computations in another context, with secure summation simulated.

    A computation that calls a secure-summation intrinsic is handed to `inner`
    with them replaced by their plain equivalents (TFF's test backend does the
    same: ``tff.backends.test.create_sync_test_cpp_execution_context``); any
    other computation is handed over unchanged.

    Args:
      inner: The context that runs the computations (TFF's default one).
    """

    def __init__(self, inner: tff.framework.SyncContext):
        self._inner = inner
        self._converted: dict[int, tuple] = {}

    def invoke(self, comp, arg):
        key = id(comp)
        cached = self._converted.get(key)
        if cached is None or cached[0] is not comp:
            cached = self._converted[key] = (comp, _tff_internals.without_secure_intrinsics(comp))
        return self._inner.invoke(cached[1], arg)


@contextlib.contextmanager
def execution(backend: str, context: InProcessContext | None = None) -> Iterator[None]:
    """Runs the TFF computations called inside on `backend` (``"tff"`` or ``"tensorflow"``).

    Args:
      backend: A resolved backend (see `resolve_backend`).
      context: The `InProcessContext` to install for ``"tensorflow"`` (its
        compiled computations are cached, so reuse one); None makes a new one.

    Yields:
      Nothing; TFF's default context is back in place afterwards.
    """
    _runtime.install()
    if backend == "tff":
        stack = tff.framework.get_context_stack()
        with stack.install(SecureSumSimulation(stack.current)):
            yield
        return
    with tff.framework.get_context_stack().install(context or InProcessContext()):
        yield
