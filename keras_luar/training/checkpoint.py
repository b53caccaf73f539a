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

    def __init__(self, directory: str, fingerprint: dict, variable_names: list[str] | None = None):
        self.directory = os.fspath(directory)
        self.fingerprint = _jsonable(fingerprint)
        # Keras's automatic names change when a model is built again in the same process
        # (dense_5 -> dense_7), so names only explain a mismatch; the structure decides.
        self.variable_names = list(variable_names or [])
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
        self,
        state,
        rounds_done: int,
        history: dict,
        client_states: dict | None = None,
        extra: dict | None = None,
    ) -> None:
        """Saves `state` (and per-client states) after `rounds_done` rounds, then the progress.

        `extra` is JSON-able run state that `restore` gives back (e.g. the
        cursors of pre-batched client data).
        """
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
            "variable_names": self.variable_names,
            "history": _jsonable(history),
            "extra": _jsonable(extra or {}),
        }
        tmp = self._progress_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(progress, f)
        os.replace(tmp, self._progress_path)

    def restore(self, template, client_template=None) -> tuple[Any, int, dict, dict, dict] | None:
        """Returns ``(state, rounds_done, history, client_states, extra)``, or None if empty.

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
            raise ValueError(self._mismatch(progress))
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
        return state, rounds_done, progress["history"], client_states, progress.get("extra", {})

    def _mismatch(self, progress: dict) -> str:
        saved, ours = progress["fingerprint"], self.fingerprint
        differing = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
        details = [
            f"{k}: {ours.get(k)!r} here, {saved.get(k)!r} in the checkpoint"
            for k in differing
            if k != "variables"
        ]
        if "variables" in differing:
            details.append(self._variable_differences(saved.get("variables") or [], progress))
        return (
            f"Invalid value for argument `checkpoint_dir`. {self.directory!r} holds a run "
            f"with a different configuration (differs in: {', '.join(differing)}). "
            + "; ".join(details)
            + ". Use another directory or delete this one."
        )

    def _variable_differences(self, saved: list, progress: dict) -> str:
        ours = self.fingerprint.get("variables") or []
        saved_names = progress.get("variable_names") or []
        lines = []
        for i in range(max(len(ours), len(saved))):
            mine = ours[i] if i < len(ours) else None
            theirs = saved[i] if i < len(saved) else None
            if mine != theirs:
                name = self.variable_names[i] if i < len(self.variable_names) else "-"
                old = saved_names[i] if i < len(saved_names) else "-"
                lines.append(
                    f"variable {i}: {name} {_shape(mine)} here, {old} {_shape(theirs)} in the "
                    "checkpoint"
                )
        shown = "; ".join(lines[:5]) + (f"; and {len(lines) - 5} more" if len(lines) > 5 else "")
        return (
            f"the model's variables differ ({len(ours)} here, {len(saved)} saved): {shown}. "
            "Variables are matched by position, shape and dtype; if the architecture is the "
            "same, build the layers in the same order (giving them names makes a mismatch "
            "easier to read)"
        )


def _shape(entry: Any) -> str:
    return "missing" if entry is None else f"{entry[0]} {entry[1]}"


def run_fingerprint(config: Any, layout: Any, num_clients: int, clients_per_round: int) -> dict:
    """What a checkpoint must match to be resumed: the run's settings and model structure.

    The variables are compared by position, shape and dtype, not by Keras's
    automatic names (which change when the same architecture is built again in
    one process).
    """
    return {
        "algorithm": config.algorithm,
        "algorithm_options": dict(config.options),
        "client_weighting": config.client_weighting,
        "bn_statistics": config.bn_statistics,
        "augmentation": getattr(config.augmentation, "__qualname__", None),
        "mixed_precision": config.mixed_precision,
        "num_recycled_layers": config.num_recycled_layers,
        "upload_budget": config.upload_budget,
        "seed": config.seed,
        "local_steps": config.local_steps,
        "batch_size": config.batch,
        "num_clients": num_clients,
        "clients_per_round": clients_per_round,
        "variables": [[list(v.shape), v.dtype] for v in layout.trainable],
    }
