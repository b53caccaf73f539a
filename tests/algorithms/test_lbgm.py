"""LBGM (`build_lbgm`) against an independent numpy replay on 3 clients over several rounds.

The model is one linear Dense layer (kernel 3x2, bias 2) with a mean squared
error loss and plain SGD, so local training replays exactly in numpy. Clients
take part in different rounds and in different positions of the client list,
so a client's look-back gradients must follow the client, not its slot.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar.algorithms.lbgm import build_lbgm

LR = 0.1
TAU = 2
SIZES = [6, 2]  # kernel (3, 2), bias (2,)
SPEC = (tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None, 2], tf.float32))
PARTICIPATION = [[0, 1], [2, 0], [1, 2, 0], [0, 2], [2, 1]]


def _model_fn():
    keras_model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    return tff.learning.models.from_keras_model(
        keras_model, loss=tf.keras.losses.MeanSquaredError(), input_spec=SPEC
    )


def _process(momentum=None, **kwargs):
    # The reference weighs a client by the examples of its round (2 + c rows per batch);
    # data set sizes ("example", the official default) are tested on their own below.
    kwargs.setdefault("client_weighting", "round_examples")
    return build_lbgm(
        _model_fn,
        client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=LR, momentum=momentum),
        local_steps=TAU,
        **kwargs,
    )


def _initial_weights():
    rng = np.random.default_rng(1)
    return [
        (rng.normal(size=(3, 2)) * 0.5).astype(np.float32),
        (rng.normal(size=2) * 0.5).astype(np.float32),
    ]


def _round_data(seed, rounds=5):
    """data[r][c]: TAU batches (x, y) of client c in round r; client c's batches hold 2 + c rows."""
    rng = np.random.default_rng(seed)
    targets = [rng.normal(size=(3, 2)) for _ in range(3)]  # each client pulls its own way
    data = []
    for _ in range(rounds):
        row = []
        for c in range(3):
            batches = []
            for _ in range(TAU):
                x = rng.normal(size=(2 + c, 3)).astype(np.float32)
                y = (x @ targets[c] + 0.3 * rng.normal(size=(2 + c, 2))).astype(np.float32)
                batches.append((x, y))
            row.append(batches)
        data.append(row)
    return data


# ----------------------------------------------------------------------------------------------
# Independent numpy reference (float64).


def _local_update(weights, batches):
    """TFF's client update initial − trained after SGD on every batch of the MSE loss."""
    kernel, bias = (np.array(w, np.float64) for w in weights)
    for x, y in batches:
        x = x.astype(np.float64)
        residual = x @ kernel + bias - y
        scale = 2.0 / residual.size  # mean over batch and outputs
        kernel, bias = kernel - LR * scale * x.T @ residual, bias - LR * scale * residual.sum(0)
    return [weights[0] - kernel, weights[1] - bias]


def _multiplier_and_error(dot, g_sq, lb_sq):
    if g_sq == 0:
        return 0.0, 0.0
    if lb_sq == 0:
        return 0.0, 1.0
    return dot / lb_sq, min(max(1.0 - dot * dot / (g_sq * lb_sq), 0.0), 1.0)


def _new_client():
    return {
        "look_back": [np.zeros((3, 2)), np.zeros(2)],
        "has": [False, False],
        "residual": [np.zeros((3, 2)), np.zeros(2)],
    }


def _reference_client(g, state, threshold, error_feedback, paper):
    """One client's LBGM step: (reconstruction, new state, scalar per tensor, errors, upload)."""
    if error_feedback:
        g = [a + r for a, r in zip(g, state["residual"], strict=True)]
    look_back = state["look_back"]
    terms = [
        (np.sum(a * b), np.sum(a * a), np.sum(b * b)) for a, b in zip(g, look_back, strict=True)
    ]
    if paper:
        rho, error = _multiplier_and_error(*np.sum(terms, axis=0))
        pairs = [(rho, error)] * len(g)
    else:
        pairs = [_multiplier_and_error(*t) for t in terms]
    if not all(np.all(np.isfinite(a)) for a in g):
        # Dropped: counted as a full send, state unchanged, weight 0.
        return None, state, [False] * len(g), [np.nan] * len(g), sum(SIZES)
    scalar = [
        has and error <= threshold for has, (_, error) in zip(state["has"], pairs, strict=True)
    ]
    rec = [
        rho * lb if s else a for (rho, _), lb, s, a in zip(pairs, look_back, scalar, g, strict=True)
    ]
    new_state = {
        "look_back": [
            a if (paper or not s) else lb for a, lb, s in zip(g, look_back, scalar, strict=True)
        ],
        "has": [True] * len(g),
        "residual": [
            a - r if s else np.zeros_like(a) for a, r, s in zip(g, rec, scalar, strict=True)
        ],
    }
    if paper:
        upload = 1 if scalar[0] else sum(SIZES)
    else:
        upload = sum(1 if s else n for s, n in zip(scalar, SIZES, strict=True))
    return rec, new_state, scalar, [e for _, e in pairs], upload


def _reference(
    data,
    participation,
    threshold,
    *,
    error_feedback=False,
    paper=False,
    uniform=False,
    server_lr=1.0,
    server_momentum=0.0,
    sizes=None,
):
    weights = [np.array(w, np.float64) for w in _initial_weights()]
    velocity = [np.zeros_like(w) for w in weights]
    states = {c: _new_client() for c in range(3)}
    rounds = []
    for r, chosen in enumerate(participation):
        total, weight_sum, upload, decisions, errors = [0.0, 0.0], 0.0, 0, {}, {}
        had = {c: list(states[c]["has"]) for c in chosen}
        for c in chosen:
            g = _local_update(weights, data[r][c])
            rec, states[c], scalar, error, sent = _reference_client(
                g, states[c], threshold, error_feedback, paper
            )
            decisions[c], errors[c], upload = scalar, error, upload + sent
            if rec is not None:
                if sizes is not None:
                    w = sizes[c]
                else:
                    w = 1.0 if uniform else sum(len(x) for x, _ in data[r][c])
                total = [t + w * a for t, a in zip(total, rec, strict=True)]
                weight_sum += w
        mean = [t / weight_sum for t in total]
        # Heavy-ball server step (TFF's SGDM): v <- m v + mean, x <- x - lr v.
        velocity = [server_momentum * v + m for v, m in zip(velocity, mean, strict=True)]
        weights = [w - server_lr * v for w, v in zip(weights, velocity, strict=True)]
        rounds.append(
            {
                "weights": [w.copy() for w in weights],
                "states": {c: {k: list(v) for k, v in s.items()} for c, s in states.items()},
                "decisions": decisions,
                "errors": errors,
                "had": had,
                "upload": upload,
            }
        )
    return rounds


def _margin(rounds, threshold):
    """Smallest distance of a decided error to the threshold (float32 must decide the same)."""
    return min(
        abs(e - threshold)
        for rec in rounds
        for c, errors in rec["errors"].items()
        for e, had in zip(errors, rec["had"][c], strict=True)
        if had and np.isfinite(e)
    )


# ----------------------------------------------------------------------------------------------
# Driving the process like the trainer does: client states kept per client id.


def _dataset(batches):
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(len(batches[0][0]))


def _drive(process, data, participation, sizes=None):
    from keras_luar.algorithms.weighting import sized_client_data

    def client_input(r, c):
        if sizes is None:
            return _dataset(data[r][c])
        return sized_client_data(_dataset(data[r][c]), sizes[c])

    state = process.initialize()
    state = process.set_model_weights(
        state, tff.learning.models.ModelWeights(trainable=_initial_weights(), non_trainable=[])
    )
    client_states = {c: process.initial_client_state() for c in range(3)}
    rounds = []
    for r, chosen in enumerate(participation):
        before = {c: client_states[c] for c in chosen}
        out = process.next(
            state, [client_input(r, c) for c in chosen], [client_states[c] for c in chosen]
        )
        state = out.state
        client_states.update(zip(chosen, out.client_states, strict=True))
        rounds.append(
            {
                "weights": [np.asarray(w) for w in process.get_model_weights(state).trainable],
                "states": dict(client_states),
                "before": before,
                "metrics": out.metrics,
            }
        )
    return rounds


def _check_against_reference(got, ref, *, residual=False):
    for r, (g, e) in enumerate(zip(got, ref, strict=True)):
        for a, b in zip(g["weights"], e["weights"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"round {r} weights")
        for c in range(3):
            state, expected = g["states"][c], e["states"][c]
            np.testing.assert_array_equal(state["has_look_back"], expected["has"])
            for a, b in zip(state["look_back"], expected["look_back"], strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"round {r} g_lb")
            if residual:
                for a, b in zip(state["residual"], expected["residual"], strict=True):
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"round {r} r")
        communication = g["metrics"]["communication"]
        assert int(communication["upload_params"]) == e["upload"], f"round {r}"
        assert int(communication["upload_bytes"]) == 4 * e["upload"], f"round {r}"
        full = [[not s for s in e["decisions"][c]] for c in e["decisions"]]
        np.testing.assert_allclose(communication["aggregated"], np.mean(full, axis=0), rtol=1e-6)


def _scalar_decisions(got_round, c):
    """Per-tensor decisions of client c read off its state: a scalar send keeps g_lb bit for bit."""
    before, after = got_round["before"][c], got_round["states"][c]
    return [
        bool(had) and np.array_equal(old, new)
        for had, old, new in zip(
            before["has_look_back"], before["look_back"], after["look_back"], strict=True
        )
    ]


# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def feedback_process():
    return _process(threshold=0.3, error_feedback=True)


def test_types_state_and_metric_names(feedback_process):
    process = feedback_process
    client_state = process.initial_client_state()
    assert list(client_state) == ["look_back", "has_look_back", "residual"]
    assert [np.shape(t) for t in client_state["look_back"]] == [(3, 2), (2,)]
    np.testing.assert_array_equal(client_state["has_look_back"], [False, False])
    result = process.next.type_signature.result
    state_names = tff.structure.name_list(result.state.member)
    assert state_names == ["global_model_weights", "client_hparams", "server_optimizer"]
    metrics = result.metrics.member
    assert tff.structure.name_list(metrics) == ["client_work", "communication", "lbgm"]
    assert tff.structure.name_list(metrics.communication) == [
        "upload_params",
        "upload_bytes",
        "aggregated",
    ]
    assert tff.structure.name_list(metrics.lbgm) == [
        "scalar_fraction",
        "mean_error",
        "num_dropped_clients",
    ]


def test_matches_numpy_reference_with_both_decisions():
    threshold, data = 0.3, _round_data(seed=2)
    ref = _reference(data, PARTICIPATION, threshold)
    assert _margin(ref, threshold) > 0.02
    got = _drive(_process(threshold=threshold), data, PARTICIPATION)
    _check_against_reference(got, ref)

    # The decisions of every client and tensor in every round, read off the client states.
    history = {(c, i): [] for c in range(3) for i in range(2)}
    for r, (g, e) in enumerate(zip(got, ref, strict=True)):
        for c in PARTICIPATION[r]:
            assert _scalar_decisions(g, c) == e["decisions"][c], f"round {r} client {c}"
            for i, s in enumerate(e["decisions"][c]):
                history[(c, i)].append(s)
        lbgm = g["metrics"]["lbgm"]
        decided = [s for c in PARTICIPATION[r] for s in e["decisions"][c]]
        np.testing.assert_allclose(lbgm["scalar_fraction"], np.mean(decided), rtol=1e-6)
        errors = [
            err
            for c in PARTICIPATION[r]
            for err, had in zip(e["errors"][c], e["had"][c], strict=True)
            if had
        ]
        np.testing.assert_allclose(
            lbgm["mean_error"], np.mean(errors) if errors else 0.0, rtol=1e-4
        )
    # The data make both decisions happen, including a full send after a scalar one.
    assert any(any(h) for h in history.values())
    assert any(
        any(a and not b for a, b in zip(h[:-1], h[1:], strict=True)) for h in history.values()
    )


def test_threshold_zero_passes_only_exact_multiples():
    # The server learning rate is 0, so the global model stays put: client 0, given the
    # same batches every round, repeats its update bit for bit (ρ = 1, error exactly 0),
    # while client 1 gets new batches and must send in full every time.
    fresh = _round_data(seed=3, rounds=3)
    data = [[fresh[0][0], fresh[r][1], fresh[r][2]] for r in range(3)]
    participation = [[0, 1], [1, 0], [0, 1]]
    ref = _reference(data, participation, 0.0, server_lr=0.0)
    assert min(e for rec in ref[1:] for e in rec["errors"][1]) > 1e-3
    process = _process(threshold=0.0, server_optimizer=tff.learning.optimizers.build_sgdm(0.0))
    got = _drive(process, data, participation)
    for r, g in enumerate(got):
        expected_upload = 2 * sum(SIZES) if r == 0 else 2 + sum(SIZES)
        communication = g["metrics"]["communication"]
        assert int(communication["upload_params"]) == expected_upload
        assert int(communication["upload_bytes"]) == 4 * expected_upload
        np.testing.assert_array_equal(
            communication["aggregated"], [1.0, 1.0] if r == 0 else [0.5, 0.5]
        )
        if r > 0:
            assert _scalar_decisions(g, 0) == [True, True]
            assert _scalar_decisions(g, 1) == [False, False]
            np.testing.assert_allclose(g["metrics"]["lbgm"]["scalar_fraction"], 0.5)
        for a, b in zip(g["weights"], _initial_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    _check_against_reference(got, ref)


def test_threshold_one_sends_scalars_after_first_round_and_drops_non_finite_clients():
    data = _round_data(seed=2, rounds=4)
    data[2][1][0][0][0, 0] = np.nan  # client 1's update is NaN in round 2: dropped
    participation = [[0, 1], [1, 2], [0, 1, 2], [2, 0]]
    ref = _reference(data, participation, 1.0, uniform=True)
    got = _drive(_process(threshold=1.0, client_weighting="uniform"), data, participation)
    # Round 0: two new clients; round 1: client 1 scalar, client 2 new; round 2: two scalar
    # clients and the dropped one (counted in full); round 3: two scalar clients.
    expected_uploads = [2 * 8, 2 + 8, 2 + 8 + 2, 2 + 2]
    assert [rec["upload"] for rec in ref] == expected_uploads
    for r, g in enumerate(got):
        assert int(g["metrics"]["communication"]["upload_params"]) == expected_uploads[r]
        assert int(g["metrics"]["lbgm"]["num_dropped_clients"]) == (1 if r == 2 else 0)
    np.testing.assert_allclose(got[2]["metrics"]["communication"]["aggregated"], [0.0, 0.0])
    # The dropped client keeps its state from round 1.
    for a, b in zip(
        got[2]["states"][1]["look_back"], got[1]["states"][1]["look_back"], strict=True
    ):
        np.testing.assert_array_equal(a, b)
    for r, g in enumerate(got):
        for a, b in zip(g["weights"], ref[r]["weights"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for c in range(3):
            for a, b in zip(
                g["states"][c]["look_back"], ref[r]["states"][c]["look_back"], strict=True
            ):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_error_feedback_matches_reference(feedback_process):
    threshold, data, participation = 0.3, _round_data(seed=1, rounds=4), PARTICIPATION[:4]
    ref = _reference(data, participation, threshold, error_feedback=True)
    assert _margin(ref, threshold) > 0.02
    # The residual of a scalar send is orthogonal to g_lb, so it shows only through later
    # decisions and full sends; these data make it change both tensors' final weights.
    plain = _reference(data, participation, threshold)
    for a, b in zip(ref[-1]["weights"], plain[-1]["weights"], strict=True):
        assert np.abs(a - b).max() > 1e-3
    assert any(np.any(s["residual"][0]) for s in ref[2]["states"].values())
    got = _drive(feedback_process, data, participation)
    _check_against_reference(got, ref, residual=True)


def test_example_weighting_uses_each_clients_data_set_size():
    threshold, data = 0.3, _round_data(seed=2, rounds=3)
    sizes = {0: 10.0, 1: 990.0, 2: 55.0}  # not the examples of a round (4, 6 and 8)
    ref = _reference(data, PARTICIPATION[:3], threshold, sizes=sizes)
    by_round = _reference(data, PARTICIPATION[:3], threshold)
    assert np.abs(ref[0]["weights"][0] - by_round[0]["weights"][0]).max() > 1e-3
    got = _drive(
        _process(threshold=threshold, client_weighting="example"),
        data,
        PARTICIPATION[:3],
        sizes=sizes,
    )
    _check_against_reference(got, ref)


def test_server_momentum_is_a_heavy_ball_step_on_the_mean_update():
    threshold, data = 0.3, _round_data(seed=2, rounds=4)
    ref = _reference(data, PARTICIPATION[:4], threshold, server_momentum=0.5)
    got = _drive(_process(threshold=threshold, server_momentum=0.5), data, PARTICIPATION[:4])
    _check_against_reference(got, ref)
    plain = _reference(data, PARTICIPATION[:4], threshold)
    assert np.abs(ref[-1]["weights"][0] - plain[-1]["weights"][0]).max() > 1e-3


# ----------------------------------------------------------------------------------------------
# The FedLUAR paper's LBGM (swblaster/FedLUAR a009835, solvers/LBGM.py), replayed in numpy:
# state per slot, decision on the sum of raw gradients against the previous round's, a
# scalar send scaling the slot's last full update, one number per tensor.


def _local_update_with_gradients(weights, batches, momentum):
    """(initial − trained, Σ raw gradients) of SGD with momentum on the MSE loss."""
    kernel, bias = (np.array(w, np.float64) for w in weights)
    velocity = [np.zeros_like(kernel), np.zeros_like(bias)]
    gradient_sum = [np.zeros_like(kernel), np.zeros_like(bias)]
    for x, y in batches:
        x = x.astype(np.float64)
        residual = x @ kernel + bias - y
        scale = 2.0 / residual.size
        grads = [scale * x.T @ residual, scale * residual.sum(0)]
        gradient_sum = [s + g for s, g in zip(gradient_sum, grads, strict=True)]
        velocity = [momentum * v + g for v, g in zip(velocity, grads, strict=True)]
        kernel, bias = kernel - LR * velocity[0], bias - LR * velocity[1]
    return [weights[0] - kernel, weights[1] - bias], gradient_sum


def _reference_paper(data, participation, threshold, momentum):
    weights = [np.array(w, np.float64) for w in _initial_weights()]
    slots = {}
    rounds = []
    for r, chosen in enumerate(participation):
        total, upload, decisions, errors = [0.0, 0.0], 0, [], []
        for k, c in enumerate(chosen):
            delta, grads = _local_update_with_gradients(weights, data[r][c], momentum)
            slot = slots.get(k)
            scalar, rho = False, 0.0
            if slot is not None:
                dot = sum(np.sum(a * b) for a, b in zip(grads, slot["look_back"], strict=True))
                lb_sq = sum(np.sum(b * b) for b in slot["look_back"])
                a_sq = sum(np.sum(a * a) for a in grads)
                error = 1.0 - dot * dot / (a_sq * lb_sq)
                scalar, rho = error <= threshold, dot / lb_sq
                errors.append(error)
            rec = [rho * d for d in slot["last_delta"]] if scalar else delta
            upload += len(SIZES) if scalar else sum(SIZES)
            slots[k] = {
                "look_back": grads,
                "last_delta": slot["last_delta"] if scalar else delta,
            }
            total = [t + a for t, a in zip(total, rec, strict=True)]
            decisions.append(scalar)
        weights = [w - t / len(chosen) for w, t in zip(weights, total, strict=True)]
        rounds.append(
            {
                "weights": [w.copy() for w in weights],
                "slots": {k: dict(v) for k, v in slots.items()},
                "decisions": decisions,
                "errors": errors,
                "upload": upload,
            }
        )
    return rounds


def _drive_slots(process, data, participation):
    assert process.client_states_by == "slot"
    state = process.initialize()
    state = process.set_model_weights(
        state, tff.learning.models.ModelWeights(trainable=_initial_weights(), non_trainable=[])
    )
    slots, rounds = {}, []
    for r, chosen in enumerate(participation):
        states = [slots.get(k, process.initial_client_state()) for k in range(len(chosen))]
        out = process.next(state, [_dataset(data[r][c]) for c in chosen], states)
        state = out.state
        slots.update(enumerate(out.client_states))
        rounds.append(
            {
                "weights": [np.asarray(w) for w in process.get_model_weights(state).trainable],
                "slots": dict(slots),
                "metrics": out.metrics,
            }
        )
    return rounds


def test_paper_variant_matches_the_official_solver():
    threshold, momentum, data = 0.9, 0.9, _round_data(seed=1)
    ref = _reference_paper(data, PARTICIPATION, threshold, momentum)
    decisions = [d for rec in ref for d in rec["decisions"]]
    assert any(decisions) and not all(decisions)
    # float32 must decide as float64 does: no error near the threshold.
    assert min(abs(e - threshold) for rec in ref for e in rec["errors"]) > 0.02
    # client_weighting=None: the variant's own, the solver's uniform mean.
    process = _process(
        momentum=momentum, threshold=threshold, variant="paper", client_weighting=None
    )
    assert process.client_states_by == "slot"
    got = _drive_slots(process, data, PARTICIPATION)
    for r, (g, e) in enumerate(zip(got, ref, strict=True)):
        for a, b in zip(g["weights"], e["weights"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"round {r}")
        for k, slot in e["slots"].items():
            for a, b in zip(g["slots"][k]["look_back"], slot["look_back"], strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"round {r} g_lb")
            for a, b in zip(g["slots"][k]["last_delta"], slot["last_delta"], strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"round {r} Δ")
        communication = g["metrics"]["communication"]
        assert int(communication["upload_params"]) == e["upload"], f"round {r}"
        np.testing.assert_allclose(
            g["metrics"]["lbgm"]["scalar_fraction"], np.mean(e["decisions"]), rtol=1e-6
        )


def test_paper_variant_reads_gradients_not_updates():
    """The decision differs from one taken on the updates, which momentum bends away."""
    threshold, momentum, data = 0.9, 0.9, _round_data(seed=1)
    ref = _reference_paper(data, PARTICIPATION, threshold, momentum)
    on_updates = []
    slots = {}
    weights = [np.array(w, np.float64) for w in _initial_weights()]
    for r, chosen in enumerate(PARTICIPATION):
        for k, c in enumerate(chosen):
            delta, _ = _local_update_with_gradients(weights, data[r][c], momentum)
            if k in slots:
                dot = sum(np.sum(a * b) for a, b in zip(delta, slots[k], strict=True))
                cos_sq = dot**2 / (
                    sum(np.sum(a * a) for a in delta) * sum(np.sum(b * b) for b in slots[k])
                )
                on_updates.append(1.0 - cos_sq <= threshold)
            else:
                on_updates.append(False)
            slots[k] = delta
        weights = ref[r]["weights"]
    assert on_updates != [d for rec in ref for d in rec["decisions"]]


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "a"}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"local_steps": 0}, "local_steps"),
        ({"local_steps": 2.0}, "local_steps"),
        ({"variant": "whole"}, "variant"),
        ({"client_weighting": "clients"}, "client_weighting"),
        ({"error_feedback": "yes"}, "error_feedback"),
        ({"error_feedback": True, "variant": "paper"}, "error_feedback"),
        ({"server_momentum": 1.0}, "server_momentum"),
        ({"server_momentum": -0.1}, "server_momentum"),
        (
            {"server_momentum": 0.9, "server_optimizer": tff.learning.optimizers.build_sgdm(1.0)},
            "server_momentum",
        ),
    ],
)
def test_bad_configuration_is_rejected_before_tracing(kwargs, name):
    arguments = {"client_optimizer": tff.learning.optimizers.build_sgdm(0.1), "local_steps": 1}
    arguments.update(kwargs)

    def model_fn():  # must not be called: validation comes first
        raise AssertionError("model_fn was called")

    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
        build_lbgm(model_fn, **arguments)


def test_bad_optimizer_type():
    with pytest.raises(TypeError, match="`client_optimizer`"):
        build_lbgm(_model_fn, client_optimizer=tf.keras.optimizers.SGD(), local_steps=1)
