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

The pieces: ``pool`` (`WorkerPoolContext`: live workers, load, retries),
``connection`` (one worker over gRPC with TFF's `RemoteExecutor`) and
``local`` (`LocalWorkers`, started on this machine).

TFF's worker protocol is neither authenticated nor encrypted, and TFF 0.87's
``worker_binary`` listens on every interface (``[::]:port``); keep workers on
a trusted network.
"""

from __future__ import annotations

# BIND_WARNING and WORKER_BINARY: importable from here, as before the split.
from keras_luar.backends.remote.local import BIND_WARNING, WORKER_BINARY, LocalWorkers  # noqa: F401
from keras_luar.backends.remote.pool import (
    WorkerPoolContext,
    WorkersUnavailableError,
    check_addresses,
)

__all__ = ["LocalWorkers", "WorkerPoolContext", "WorkersUnavailableError", "check_addresses"]
