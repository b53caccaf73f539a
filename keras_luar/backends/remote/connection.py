"""One TFF worker over gRPC: addresses, readiness probes, client calls, which errors mean "gone".

A call uses TFF's own client (`RemoteExecutor` over a gRPC channel): the
block's proto is sent once per worker and kept there; each call then sends its
argument (the global model and the client's dataset, serialized with its data)
and fetches the result.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

import grpc
import tensorflow_federated as tff

from keras_luar import _tff_internals
from keras_luar.backends.in_process.values import to_numpy

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
# What a call to a worker raises when it failed there (retried, or reconnected).
CALL_ERRORS = (grpc.RpcError, _tff_internals.RetryableError)


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


def is_ready(address: str, timeout: float, *, refused_is_final: bool = False) -> bool:
    """True when a gRPC server answers at `address` within `timeout` seconds.

    Args:
      address: ``"host:port"``.
      timeout: Seconds to wait.
      refused_is_final: Answer False at once for a refused connection (gRPC's
        TRANSIENT_FAILURE) instead of retrying until the timeout.

    Returns:
      Whether the channel became ready.
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


class Reconnect(Exception):
    """A worker must be connected again before it takes calls."""


class Worker:
    """One worker address: its channel, executor, the blocks sent to it, its load.

    Args:
      address: ``"host:port"``.
      call_timeout: Seconds one call may take; None waits forever.
    """

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
        """Opens a new channel and executor (dropping the old ones); the worker is alive."""
        with self._lock:
            self._drop()
            self._channel = grpc.insecure_channel(self.address, _CHANNEL_OPTIONS)
            stub = _tff_internals.deadline_stub(self._channel, self._call_timeout)
            executor = _tff_internals.RemoteExecutor(stub)
            executor.set_cardinalities({tff.CLIENTS: 0})
            self._executor = executor
            self.alive = True

    def reset(self) -> None:
        """Closes the channel and forgets the executor and the blocks sent."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        self._blocks.clear()
        self._executor = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def call(self, block: Any, argument: Any) -> Any:
        """Runs the TensorFlow `block` on `argument` at this worker.

        Args:
          block: A ``CompiledComputation`` building block (sent once).
          argument: Its argument in the interpreter's representation.

        Returns:
          The result as TFF's executor computed it (numpy values; see
          `keras_luar.backends.in_process.values.from_wire`).

        Raises:
          Reconnect: When the worker was reset since it was last connected.
          grpc.RpcError: Or TFF's ``RetryableError``, when the call failed there.
        """
        with self._lock:
            executor = self._executor
            if executor is None:
                raise Reconnect()
            cached = self._blocks.get(id(block))
        if cached is None or cached[0] is not block:
            comp = _tff_internals.run_sync(executor.create_value(block.proto, block.type_signature))
            with self._lock:
                if self._executor is executor:
                    self._blocks[id(block)] = (block, comp)
        else:
            comp = cached[1]
        parameter = block.type_signature.parameter
        arg = None
        if parameter is not None:
            arg = _tff_internals.run_sync(executor.create_value(to_numpy(argument), parameter))
        result = _tff_internals.run_sync(executor.create_call(comp, arg))
        return _tff_internals.run_sync(result.compute())


def _status(error: BaseException) -> grpc.StatusCode | None:
    if isinstance(error, _tff_internals.RetryableGRPCError):
        error = error.args[0] if error.args else error
    code = getattr(error, "code", None)
    try:
        return code() if callable(code) else None
    except Exception:  # noqa: BLE001 - an RpcError that is not a Call
        return None


def is_connection_error(error: BaseException) -> bool:
    """Whether a failed call means its worker is gone or unreachable (not a bad call).

    Args:
      error: What the call raised.

    Returns:
      True for UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED and ABORTED.
    """
    return _status(error) in _CONNECTION_CODES


def describe(error: BaseException) -> str:
    """A short name for a failed call's error: its gRPC status, else its class.

    Args:
      error: What the call raised.

    Returns:
      E.g. ``"UNAVAILABLE"``.
    """
    code = _status(error)
    if code is not None:
        return code.name
    return type(error).__name__
