"""Per-round checkpoints of a federated run that survive Ctrl-C.

The TFF server state (model, optimizer and LUAR state) is saved with TFF's
`FileProgramStateManager`, versioned by the number of completed rounds. A
small ``progress.json`` (completed rounds, the History so far and a
fingerprint of the run's configuration) is written after the state, by an
atomic rename, so it only ever points at a state that was completely
written: an interruption during a save leaves the previous round usable.
Methods with per-client state (LBGM, FedLAMA) also save those states, one
``clients-<round>.npz`` per round, written before ``progress.json``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

_PROGRESS = "progress.json"


def run_sync(coroutine):
    """Runs a coroutine to completion, also from inside a running event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _jsonable(value: Any):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class RoundCheckpoint:
    """Saves and restores the state of a run after each round.

    Args:
      directory: Where to keep the checkpoints.
      fingerprint: JSON-able description of the run; restoring into a run with
        a different fingerprint raises instead of silently mixing runs.
    """

    def __init__(self, directory: str, fingerprint: dict):
        self.directory = os.fspath(directory)
        self.fingerprint = _jsonable(fingerprint)
        os.makedirs(self.directory, exist_ok=True)
        self._manager = tff.program.FileProgramStateManager(
            os.path.join(self.directory, "state"), keep_total=2
        )

    @property
    def _progress_path(self) -> str:
        return os.path.join(self.directory, _PROGRESS)

    def _clients_path(self, rounds_done: int) -> str:
        return os.path.join(self.directory, f"clients-{rounds_done}.npz")

    def save(
        self, state, rounds_done: int, history: dict, client_states: dict | None = None
    ) -> None:
        """Saves `state` (and per-client states) after `rounds_done` rounds, then the progress."""
        run_sync(self._manager.save(state, version=rounds_done))
        if client_states:
            arrays = {
                f"{cid}/{j}": np.asarray(leaf)
                for cid, value in client_states.items()
                for j, leaf in enumerate(tf.nest.flatten(value))
            }
            tmp = self._clients_path(rounds_done) + ".tmp.npz"
            np.savez(tmp, **arrays)
            os.replace(tmp, self._clients_path(rounds_done))
            stale = self._clients_path(rounds_done - 2)
            if os.path.exists(stale):
                os.remove(stale)
        progress = {
            "rounds_done": rounds_done,
            "fingerprint": self.fingerprint,
            "history": _jsonable(history),
        }
        tmp = self._progress_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(progress, f)
        os.replace(tmp, self._progress_path)

    def restore(self, template, client_template=None) -> tuple[Any, int, dict, dict] | None:
        """Returns ``(state, rounds_done, history, client_states)``, or None if empty.

        `client_template` is the structure of one client's state (None for
        methods without client state).

        Raises:
          ValueError: If the directory holds a run with another configuration.
        """
        if not os.path.exists(self._progress_path):
            return None
        with open(self._progress_path, encoding="utf-8") as f:
            progress = json.load(f)
        if progress["fingerprint"] != self.fingerprint:
            differing = sorted(
                k
                for k in set(progress["fingerprint"]) | set(self.fingerprint)
                if progress["fingerprint"].get(k) != self.fingerprint.get(k)
            )
            raise ValueError(
                f"Invalid value for argument `checkpoint_dir`. {self.directory!r} holds a run "
                f"with a different configuration (differs in: {', '.join(differing)}). Use "
                "another directory or delete this one."
            )
        rounds_done = int(progress["rounds_done"])
        state = run_sync(self._manager.load(rounds_done, template))
        client_states: dict = {}
        if client_template is not None and os.path.exists(self._clients_path(rounds_done)):
            with np.load(self._clients_path(rounds_done)) as arrays:
                leaves: dict[int, dict[int, np.ndarray]] = {}
                for key in arrays.files:
                    cid, j = key.split("/")
                    leaves.setdefault(int(cid), {})[int(j)] = arrays[key]
            for cid, parts in leaves.items():
                flat = [parts[j] for j in range(len(parts))]
                client_states[cid] = tf.nest.pack_sequence_as(client_template, flat)
        return state, rounds_done, progress["history"], client_states
