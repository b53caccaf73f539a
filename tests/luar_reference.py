"""An independent numpy reference of one FedLUAR aggregation round.

Written from ALGORITHMS.md, not from the TensorFlow code: float64 numpy, plain
loops, no shared helpers. The recycle mask R_t is an input: the reference
checks what the server does with it; the draw itself is tested separately
(tests/test_scoring.py) and by `check_mask_draw` below.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class RefState:
    mask: np.ndarray  # bool [L]
    scores: np.ndarray  # float [L]
    updates: list[np.ndarray]  # U_l
    counts: np.ndarray  # int [L]


def initial_state(shapes: list[tuple[int, ...]]) -> RefState:
    cand = [s for s in shapes if len(s) >= 2]
    return RefState(
        mask=np.zeros(len(cand), bool),
        scores=np.zeros(len(cand)),
        updates=[np.zeros(s) for s in cand],
        counts=np.zeros(len(cand), np.int64),
    )


def reference_round(
    state: RefState,
    client_values: list[list[np.ndarray]],
    client_weights: list[float],
    weight_norms: np.ndarray | None,
    *,
    uniform: bool = True,
):
    """Returns (result, new_state_without_mask, measurements) for one round."""
    shapes = [np.shape(v) for v in client_values[0]]
    cand = [i for i, s in enumerate(shapes) if len(s) >= 2]
    sizes = [int(np.prod(s)) for s in shapes]

    weights, sent = [], []
    for values, w in zip(client_values, client_weights, strict=True):
        finite = all(np.all(np.isfinite(v)) for v in values)
        valid = finite and w > 0
        weights.append((1.0 if uniform else float(w)) if valid else 0.0)
        upload = [np.array(v, np.float64) for v in values]
        for j, i in enumerate(cand):
            if state.mask[j]:
                upload[i] = np.zeros(shapes[i])
        if not valid:
            upload = [np.zeros(s) for s in shapes]
        sent.append(upload)
    total_w = sum(weights)
    mean = []
    for i in range(len(shapes)):
        acc = sum(w * up[i] for w, up in zip(weights, sent, strict=True))
        mean.append(acc / total_w if total_w > 0 else np.zeros(shapes[i]))

    num_valid = sum(w > 0 for w in weights)
    result = [m.copy() for m in mean]
    scores = state.scores.copy()
    updates = [u.copy() for u in state.updates]
    counts = state.counts.copy()
    missing = weight_norms is None
    for j, i in enumerate(cand):
        if state.mask[j]:
            result[i] = state.updates[j].copy()
        elif num_valid > 0:
            updates[j] = mean[i].copy()
            denominator = (1.0 if missing else weight_norms[j]) + 1e-6
            scores[j] = np.linalg.norm(mean[i]) / denominator
            counts[j] += 1
    per_client = sum(sizes) - sum(sizes[i] for j, i in enumerate(cand) if state.mask[j])
    measurements = {
        "recycled": state.mask.copy(),
        "num_recycled": int(state.mask.sum()),
        "num_clients": len(client_values),
        "num_dropped_clients": len(client_values) - num_valid,
        "upload_params_per_client": per_client,
        "upload_params": per_client * len(client_values),
        "upload_bytes_per_client": 4 * per_client,
        "upload_bytes": 4 * per_client * len(client_values),
        "upload_fraction": per_client / sum(sizes),
        "aggregation_counts": counts.copy(),
        "weight_norms_missing": missing,
    }
    new_state = RefState(mask=state.mask, scores=scores, updates=updates, counts=counts)
    return result, new_state, measurements


def check_mask_draw(mask: np.ndarray, delta: int, counts: np.ndarray) -> None:
    """A drawn mask has min(δ, #eligible) entries, all eligible (stored update)."""
    eligible = counts > 0
    assert mask.sum() == min(delta, int(eligible.sum()))
    assert not np.any(mask & ~eligible)
