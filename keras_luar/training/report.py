"""A round's metrics, as the History, the callbacks and the progress bar get them.

Every process reports its accounting in one of two shapes, at one of two places:
``luar`` (from `keras_luar.LuarFactory`: the recycle mask, scores and upload) or
``communication`` (every other method: upload and the per-variable aggregation),
either at the top of the metrics (processes with client state) or under
``aggregator`` (TFF's learning processes). The local training's metrics are under
``client_work.train`` everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from keras_luar.layers import ModelLayout

# Metrics TFF's training adds that are no model metric.
_TRAIN_COUNTS = ("num_examples", "num_batches")


def _accounting(metrics: Any) -> tuple[str, Any]:
    for place in (metrics, metrics.get("aggregator", {})):
        for kind in ("luar", "communication"):
            if isinstance(place, dict) and kind in place:
                return kind, place[kind]
    raise RuntimeError(  # pragma: no cover - every registered method reports one
        f"The process reported no accounting (`luar` or `communication`). Metrics: {list(metrics)}"
    )


@dataclasses.dataclass(frozen=True)
class RoundReport:
    """What one round did.

    Attributes:
      train: The clients' training metrics (loss and model metrics).
      upload_params: Numbers the round's clients uploaded together.
      upload_bytes: Bytes they uploaded together.
      aggregated: Per trainable variable, the fraction of clients whose fresh
        update was applied (the paper's Figure 3, summed over rounds).
      luar: Whether LUAR reported (then the fields below are set).
      num_recycled: δ of the round.
      num_dropped_clients: Clients whose update held NaN/Inf.
      recycled: Names of the recycled candidates.
      scores: The candidates' scores after the round.
    """

    train: dict[str, float]
    upload_params: float
    upload_bytes: float
    aggregated: list[float]
    luar: bool = False
    num_recycled: float = 0.0
    num_dropped_clients: float = 0.0
    recycled: list[str] = dataclasses.field(default_factory=list)
    scores: list[float] = dataclasses.field(default_factory=list)

    @classmethod
    def from_metrics(cls, metrics: Any, layout: ModelLayout) -> RoundReport:
        """Reads a process's round metrics."""
        train = {
            k: float(v)
            for k, v in metrics["client_work"]["train"].items()
            if k not in _TRAIN_COUNTS
        }
        kind, values = _accounting(metrics)
        if kind == "communication":
            return cls(
                train=train,
                upload_params=float(values["upload_params"]),
                upload_bytes=float(values["upload_bytes"]),
                aggregated=[float(a) for a in np.asarray(values["aggregated"], np.float64)],
            )
        recycled_mask = np.asarray(values["recycled"], bool)
        aggregated = np.ones(len(layout.trainable))
        aggregated[list(layout.candidate_indices)] = ~recycled_mask
        if int(values["num_clients"]) == int(values["num_dropped_clients"]):
            aggregated[:] = 0.0  # every client dropped: nothing was applied
        return cls(
            train=train,
            upload_params=float(values["upload_params"]),
            upload_bytes=float(values["upload_bytes"]),
            aggregated=[float(a) for a in aggregated],
            luar=True,
            num_recycled=float(values["num_recycled"]),
            num_dropped_clients=float(values["num_dropped_clients"]),
            recycled=[n for n, m in zip(layout.candidate_names, recycled_mask, strict=True) if m],
            scores=[float(v) for v in np.asarray(values["scores"], np.float64)],
        )

    def logs(self, *, comm_cost: float, round_time: float) -> dict[str, float]:
        """The round's Keras logs (before the ``val_`` metrics are added)."""
        logs = dict(self.train)
        logs.update(
            upload_params=self.upload_params, upload_bytes=self.upload_bytes, comm_cost=comm_cost
        )
        if self.luar:
            logs.update(
                num_recycled=self.num_recycled, num_dropped_clients=self.num_dropped_clients
            )
        logs["round_time"] = round_time
        return logs

    def history_entries(self) -> dict[str, list]:
        """The list-valued History entries of the round (not passed to callbacks)."""
        entries: dict[str, list] = {}
        if self.luar:
            entries["recycled_layers"] = self.recycled
            entries["layer_scores"] = self.scores
        entries["aggregated"] = self.aggregated
        return entries
