"""FedPart: layer groups, the round schedule, the partial aggregation and a numpy replay."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import keras_luar  # noqa: F401 - sets up TFF's runtime before the first computation
from keras_luar.algorithms.fedpart import (
    FedPartSchedule,
    LayerGroup,
    PartialUpdateFactory,
    build_fedpart,
    layer_groups,
)
from keras_luar.algorithms.weighting import sized_client_data

L = tf.keras.layers


def _named_groups(model, groups):
    names = [v.name for v in model.trainable_variables]
    return [(g.name, [names[i] for i in g.indices]) for g in groups]


def _vars(*layers_and_kinds):
    return [f"{name}/{kind}:0" for name, kinds in layers_and_kinds for kind in kinds]


KB = ("kernel", "bias")
GB = ("gamma", "beta")


# ---------------------------------------------------------------- layer_groups


def _conv_bn_sequential():
    return tf.keras.Sequential(
        [
            tf.keras.Input((6, 6, 1)),
            L.Conv2D(2, 3, name="conv1"),
            L.BatchNormalization(name="bn1"),
            L.ReLU(),
            L.Conv2D(3, 3, name="conv2"),
            L.BatchNormalization(name="bn2"),
            L.Flatten(),
            L.Dense(2, name="head"),
        ]
    )


def test_sequential_conv_bn_groups():
    model = _conv_bn_sequential()
    groups = layer_groups(model)
    assert [g.indices for g in groups] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    assert _named_groups(model, groups) == [
        ("conv1", _vars(("conv1", KB), ("bn1", GB))),
        ("conv2", _vars(("conv2", KB), ("bn2", GB))),
        ("head", _vars(("head", KB))),
    ]
    assert all(isinstance(g, LayerGroup) for g in groups)


def test_resnet_block_projection_is_its_own_group_and_leading_bn_joins_first():
    inp = tf.keras.Input((8, 8, 3))
    x = L.BatchNormalization(name="in_bn")(inp)  # before any kernel: joins the first group
    x = L.Conv2D(4, 3, padding="same", name="c1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    y = L.Conv2D(8, 3, strides=2, padding="same", name="c2")(x)
    y = L.ReLU()(y)  # a parameter-free layer between a conv and its BN
    y = L.BatchNormalization(name="bn2")(y)
    s = L.Conv2D(8, 1, strides=2, name="proj")(x)
    s = L.BatchNormalization(name="proj_bn")(s)
    z = L.GlobalAveragePooling2D()(L.ReLU()(L.Add()([y, s])))
    model = tf.keras.Model(inp, L.Dense(3, name="head")(z))
    # Keras orders the functional layers c2, proj, bn2, proj_bn: the BN must follow
    # its own conv through the graph, not the layer list.
    assert _named_groups(model, layer_groups(model)) == [
        ("c1", _vars(("in_bn", GB), ("c1", KB), ("bn1", GB))),
        ("c2", _vars(("c2", KB), ("bn2", GB))),
        ("proj", _vars(("proj", KB), ("proj_bn", GB))),
        ("head", _vars(("head", KB))),
    ]


def test_transformer_groups():
    tokens = tf.keras.Input((5,), dtype="int32")
    e = L.Embedding(20, 8, name="emb")(tokens)
    a = L.MultiHeadAttention(2, 4, name="mha")(e, e)
    h = L.LayerNormalization(name="ln1")(e + a)
    f = L.Dense(16, activation="relu", name="ff1")(h)
    f = L.Dense(8, name="ff2")(f)
    h = L.LayerNormalization(name="ln2")(h + f)
    logits = L.Dense(3, name="cls")(L.GlobalAveragePooling1D()(h))
    model = tf.keras.Model(tokens, logits)
    mha = [f"mha/{p}/{k}:0" for p in ("query", "key", "value", "attention_output") for k in KB]
    assert _named_groups(model, layer_groups(model)) == [
        ("emb", ["emb/embeddings:0"]),
        ("mha", mha + _vars(("ln1", GB))),
        ("ff1", _vars(("ff1", KB))),
        ("ff2", _vars(("ff2", KB), ("ln2", GB))),
        ("cls", _vars(("cls", KB))),
    ]


def test_nested_models_are_walked_inside():
    block = tf.keras.Sequential(
        [tf.keras.Input((3,)), L.Dense(4, name="d1"), L.LayerNormalization(name="ln")],
        name="block",
    )
    inp = tf.keras.Input((3,))
    x = L.BatchNormalization(name="after_block")(block(inp))  # joins the block's last group
    model = tf.keras.Model(inp, L.Dense(2, name="head")(x))
    assert _named_groups(model, layer_groups(model)) == [
        ("block/d1", _vars(("d1", KB), ("ln", GB), ("after_block", GB))),
        ("head", _vars(("head", KB))),
    ]


def test_variable_owned_by_no_layer_is_reported():
    class Scaled(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def build(self, input_shape):
            self.scale = self.add_weight(name="loose_scale", shape=(2,))
            super().build(input_shape)

        def call(self, x):
            return self.dense(x) * self.scale

    model = Scaled()
    model(tf.zeros([1, 3]))
    with pytest.raises(ValueError, match="could not place.*loose_scale"):
        layer_groups(model)


def test_explicit_groups_by_layer_variable_name_and_index():
    model = _conv_bn_sequential()
    groups = layer_groups(
        model, [["conv1", "bn1"], ["conv2/kernel", "conv2/bias:0", 6, 7], ["head"]]
    )
    assert [g.indices for g in groups] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    assert groups[0].name == "conv1+bn1"


@pytest.mark.parametrize(
    "groups,match",
    [
        ([["conv1", "bn1"], ["conv2", "bn2"]], "miss.*head/kernel"),
        (
            [["conv1", "bn1"], ["conv2", "bn2", "conv1"], ["head"]],
            "exactly one group.*conv1/kernel",
        ),
        ([["conv1", "bn1"], ["conv2", "bn2", 0], ["head"]], "exactly one group"),
        ([["conv1", "bn1", "nope"], ["conv2", "bn2"], ["head"]], "unknown name 'nope'"),
        ([["conv1", "bn1", 99], ["conv2", "bn2"], ["head"]], "index 99"),
        ([["conv1", "bn1"], [], ["conv2", "bn2", "head"]], "non-empty"),
        ([], "non-empty"),
    ],
)
def test_explicit_group_errors(groups, match):
    with pytest.raises(ValueError, match=match):
        layer_groups(_conv_bn_sequential(), groups)


def test_explicit_group_entry_type_error():
    with pytest.raises(TypeError, match="1.5"):
        layer_groups(_conv_bn_sequential(), [["conv1", 1.5]])


# ---------------------------------------------------------------- schedule

F = None  # a full-network round


def test_default_schedule_three_groups_over_three_cycles():
    schedule = FedPartSchedule(3)
    # 5 warm-up rounds, then cycles of g0 g0 g1 g1 g2 g2 + 5 full rounds (11 rounds).
    expected = (
        [F] * 5
        + [0, 0, 1, 1, 2, 2, F, F, F, F, F]  # rounds 5-15
        + [0, 0, 1, 1, 2, 2, F, F, F, F, F]  # rounds 16-26
        + [0, 0, 1, 1, 2, 2, F, F, F, F, F]  # rounds 27-37
        + [0, 0, 1]  # rounds 38-40
    )
    assert [schedule.group_at(r) for r in range(len(expected))] == expected
    assert schedule.cycle_length == 11
    # 9995 = 908 * 11 + 7 rounds after warm-up: position 7 of a cycle is a full round;
    # 9993 - 5 = 908 * 11 is the start of a cycle.
    assert schedule.group_at(10_000) is None
    assert schedule.group_at(9_993) == 0
    assert schedule.group_at(9_995) == 1


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        (dict(num_groups=2, warmup_rounds=0, rounds_per_group=1, full_rounds_between_cycles=0),
         [0, 1, 0, 1, 0, 1, 0, 1]),
        (dict(num_groups=2, warmup_rounds=2, rounds_per_group=3, full_rounds_between_cycles=1),
         [F, F, 0, 0, 0, 1, 1, 1, F, 0, 0, 0, 1, 1, 1, F, 0, 0, 0, 1]),
        (dict(num_groups=1, warmup_rounds=1, rounds_per_group=1, full_rounds_between_cycles=2),
         [F, 0, F, F, 0, F, F, 0, F, F]),
    ],
)  # fmt: skip
def test_schedule_other_settings_in_python_and_tensorflow(kwargs, expected):
    schedule = FedPartSchedule(**kwargs)
    assert [schedule.group_at(r) for r in range(len(expected))] == expected
    num_groups = kwargs["num_groups"]
    # Variable v belongs to group v % G; 2 variables per group.
    groups = [[v for v in range(2 * num_groups) if v % num_groups == g] for g in range(num_groups)]
    mask_fn = tf.function(schedule.trainable_mask_fn(groups, 2 * num_groups))
    for r, g in enumerate(expected):
        assert int(schedule.group_index(tf.constant(r))) == (-1 if g is None else g)
        want = [g is None or v % num_groups == g for v in range(2 * num_groups)]
        assert mask_fn(tf.constant(r, tf.int32)).numpy().tolist() == want


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(num_groups=0), ValueError),
        (dict(num_groups=2.0), TypeError),
        (dict(num_groups=True), TypeError),
        (dict(num_groups=2, warmup_rounds=-1), ValueError),
        (dict(num_groups=2, rounds_per_group=0), ValueError),
        (dict(num_groups=2, rounds_per_group=1.5), TypeError),
        (dict(num_groups=2, full_rounds_between_cycles=-1), ValueError),
        (dict(num_groups=2, full_rounds_between_cycles="5"), TypeError),
    ],
)
def test_schedule_validation(kwargs, error):
    name = [k for k in kwargs if k != "num_groups"] or ["num_groups"]
    with pytest.raises(error, match=f"argument `{name[0]}`"):
        FedPartSchedule(**kwargs)


def test_schedule_round_and_groups_validation():
    schedule = FedPartSchedule(2)
    with pytest.raises(ValueError, match="round_num"):
        schedule.group_at(-1)
    with pytest.raises(ValueError, match="num_groups=2"):
        schedule.trainable_mask_fn([[0, 1, 2]], 3)
    with pytest.raises(ValueError, match="miss the variables at indices \\[2\\]"):
        schedule.trainable_mask_fn([[0], [1]], 3)
    with pytest.raises(ValueError, match="index 1 in groups 0 and 1"):
        schedule.trainable_mask_fn([[0, 1], [1, 2]], 3)
    with pytest.raises(ValueError, match="int indices"):
        schedule.trainable_mask_fn([["a"], [1, 2]], 3)


# ---------------------------------------------------------------- the aggregation factory


def test_factory_zero_fills_guards_and_accounts():
    # Groups [0] and [1]; rounds: 0 full, 1 group 0, 2 group 1, 3 group 0, ...
    schedule = FedPartSchedule(2, warmup_rounds=1, rounds_per_group=1, full_rounds_between_cycles=0)
    factory = PartialUpdateFactory(
        schedule.trainable_mask_fn([[0], [1]], 2), group_schedule=schedule.group_index
    )
    value_type = tff.types.to_type([(np.float32, (2, 3)), (np.float32, (3,))])
    process = factory.create(value_type, tff.TensorType(np.float32))
    rng = np.random.default_rng(0)
    values = [[rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
              for _ in range(3)]  # fmt: skip
    weights = [1.0, 2.0, 5.0]
    state = process.initialize()
    plan = [
        ([True, True], weights, -1),
        ([True, False], weights, 0),
        ([False, True], [0.0, 0.0, 0.0], 1),  # every weight 0: no update, not NaN
        ([True, False], weights, 0),
    ]
    for trained, w, group in plan:
        out = process.next(state, values, w)
        state = out.state
        total = sum(w)
        for i in range(2):
            if trained[i] and total > 0:
                expected = sum(wk * v[i] for wk, v in zip(w, values, strict=True)) / total
            else:
                expected = np.zeros_like(values[0][i])
            np.testing.assert_allclose(out.result[i], expected, rtol=1e-6, atol=1e-7)
        comm = out.measurements["communication"]
        sent = 6 * trained[0] + 3 * trained[1]
        assert int(comm["upload_params"]) == sent * 3
        assert int(comm["upload_bytes"]) == 4 * sent * 3
        valid = 1.0 if total > 0 else 0.0
        np.testing.assert_array_equal(comm["aggregated"], np.array(trained, np.float32) * valid)
        assert int(out.measurements["fedpart"]["group"]) == group

    # A client with a non-finite value is dropped from the mean (round 4: group 1).
    bad = [values[0], [values[1][0], np.full(3, np.nan, np.float32)], values[2]]
    out = process.next(state, bad, weights)
    expected = (1.0 * values[0][1] + 5.0 * values[2][1]) / 6.0
    np.testing.assert_allclose(out.result[1], expected, rtol=1e-6)
    np.testing.assert_array_equal(out.result[0], np.zeros((2, 3), np.float32))
    np.testing.assert_allclose(
        out.measurements["communication"]["aggregated"], [0.0, 2.0 / 3.0], rtol=1e-6
    )


def test_factory_rejects_a_mask_of_the_wrong_length():
    factory = PartialUpdateFactory(lambda r: tf.ones([3], tf.bool))
    with pytest.raises(ValueError, match="one entry per tensor"):
        factory.create(tff.types.to_type([(np.float32, (2,))]), tff.TensorType(np.float32))


# ---------------------------------------------------------------- the learning process

INPUT_SPEC = (tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None], tf.int32))
LR = 0.1


def _keras_mlp():
    return tf.keras.Sequential(
        [
            tf.keras.Input((3,)),
            L.Dense(4, activation="tanh"),
            L.Dense(3, activation="tanh"),
            L.Dense(2),
        ]
    )


def _model_fn():
    return tff.learning.models.from_keras_model(
        _keras_mlp(),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=INPUT_SPEC,
    )


def _mlp_grads(w, x, y):
    """Gradients of the mean softmax cross-entropy of a tanh-tanh-linear MLP (float64)."""
    k1, b1, k2, b2, k3, b3 = w
    h1 = np.tanh(x @ k1 + b1)
    h2 = np.tanh(h1 @ k2 + b2)
    z = h2 @ k3 + b3
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dz = (p - np.eye(2)[y]) / len(y)
    d2 = (dz @ k3.T) * (1 - h2**2)
    d1 = (d2 @ k2.T) * (1 - h1**2)
    return [x.T @ d1, d1.sum(0), h1.T @ d2, d2.sum(0), h2.T @ dz, dz.sum(0)]


def _reference_round(weights, clients, trained):
    """One FedPart round: masked local SGD per client, example-weighted average."""
    results, counts = [], []
    for x, y in clients:
        w = [v.copy() for v in weights]
        for start in range(0, len(y), 4):  # batches of 4, as the datasets are batched
            grads = _mlp_grads(w, x[start : start + 4], y[start : start + 4])
            w = [v - LR * g if t else v for v, g, t in zip(w, grads, trained, strict=True)]
        results.append(w)
        counts.append(len(y))
    total = sum(counts)
    return [
        sum(n * r[i] for n, r in zip(counts, results, strict=True)) / total
        if trained[i]
        else weights[i]
        for i in range(len(weights))
    ]


def test_fedpart_process_matches_numpy_replay():
    model = _keras_mlp()
    groups = layer_groups(model)
    assert [g.indices for g in groups] == [(0, 1), (2, 3), (4, 5)]
    process = build_fedpart(
        _model_fn,
        groups=groups,
        client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=LR),
        local_steps=2,
        warmup_rounds=1,
        rounds_per_group=2,
        full_rounds_between_cycles=1,
    )
    # Written out: warm-up, g0 g0 g1 g1 g2 g2, one full round, then the next cycle.
    expected_groups = [-1, 0, 0, 1, 1, 2, 2, -1, 0, 0]
    sizes = [12, 4, 12, 3, 6, 2]
    group_of = [0, 0, 1, 1, 2, 2]

    rng = np.random.default_rng(3)
    clients = []
    for n in (5, 7, 9):  # unequal sizes: example weighting differs from uniform
        clients.append(
            (rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 2, n).astype(np.int32))
        )
    # Each client trains on all its data once per round, so its data set size is the
    # number of examples the numpy replay weighs it by.
    datasets = [
        sized_client_data(tf.data.Dataset.from_tensor_slices(c).batch(4), len(c[0]))
        for c in clients
    ]
    state = process.initialize()
    init = [
        (rng.normal(size=s) * 0.7).astype(np.float32) for s in [(3, 4), 4, (4, 3), 3, (3, 2), 2]
    ]
    state = process.set_model_weights(
        state, tff.learning.models.ModelWeights(trainable=init, non_trainable=[])
    )
    reference = [v.astype(np.float64) for v in init]
    for r, group in enumerate(expected_groups):
        chosen = [0, 2] if r == 4 else [0, 1, 2]  # only the sampled clients count
        before = [np.array(v) for v in process.get_model_weights(state).trainable]
        out = process.next(state, [datasets[c] for c in chosen])
        state = out.state
        after = [np.array(v) for v in process.get_model_weights(state).trainable]
        trained = [group == -1 or g == group for g in group_of]
        reference = _reference_round(reference, [clients[c] for c in chosen], trained)
        for i in range(6):
            np.testing.assert_allclose(after[i], reference[i], atol=2e-5, err_msg=f"round {r}")
            if not trained[i]:
                np.testing.assert_array_equal(after[i], before[i])  # frozen: bit for bit
            else:
                assert not np.array_equal(after[i], before[i])
        metrics = out.metrics["aggregator"]
        assert int(metrics["fedpart"]["group"]) == group
        sent = sum(s for s, t in zip(sizes, trained, strict=True) if t)
        assert int(metrics["communication"]["upload_params"]) == sent * len(chosen)
        assert int(metrics["communication"]["upload_bytes"]) == 4 * sent * len(chosen)
        np.testing.assert_array_equal(
            metrics["communication"]["aggregated"], np.array(trained, np.float32)
        )


def test_build_fedpart_validation():
    sgd = tff.learning.optimizers.build_sgdm(learning_rate=LR)
    groups = [LayerGroup("a", (0, 1)), LayerGroup("b", (2, 3, 4, 5))]
    with pytest.raises(ValueError, match="local_steps"):
        build_fedpart(_model_fn, groups=groups, client_optimizer=sgd, local_steps=0)
    with pytest.raises(ValueError, match="miss the variables at indices \\[4, 5\\]"):
        build_fedpart(_model_fn, groups=groups[:1] + [LayerGroup("b", (2, 3))],
                      client_optimizer=sgd, local_steps=1)  # fmt: skip
    with pytest.raises(ValueError, match="warmup_rounds"):
        build_fedpart(
            _model_fn, groups=groups, client_optimizer=sgd, local_steps=1, warmup_rounds=-1
        )
    with pytest.raises(ValueError, match="non-empty"):
        build_fedpart(_model_fn, groups=[], client_optimizer=sgd, local_steps=1)
