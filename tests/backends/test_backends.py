"""The in-process TensorFlow backend gives what TFF's C++ runtime gives, for every algorithm."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from test_trainer import ROUNDS, _client_data, _fit, _model, _round_inputs, _trainer

from keras_luar import backends
from keras_luar.algorithms.weighting import sized_client_data
from keras_luar.backends import InProcessContext

# Every registered algorithm; LUAR on top where a method can take it (δ = 1 of 3).
CASES = {
    "fedavg": dict(algorithm="fedavg", num_recycled_layers=None),
    "fedluar": dict(algorithm="fedluar", num_recycled_layers=1),
    "fedprox+luar": dict(algorithm="fedprox", num_recycled_layers=1, proximal_strength=0.01),
    "fedopt+luar": dict(
        algorithm="fedopt",
        num_recycled_layers=1,
        server_optimizer=tf.keras.optimizers.SGD(0.9, momentum=0.5),
    ),  # fmt: skip
    "fedpaq+luar": dict(algorithm="fedpaq", num_recycled_layers=1, quantization_levels=4),
    "fedlama": dict(algorithm="fedlama", num_recycled_layers=None, fedavg_rounds=1),
    "lbgm": dict(algorithm="lbgm", num_recycled_layers=None, lbgm_threshold=0.5),
    "fedpart": dict(
        algorithm="fedpart",
        num_recycled_layers=None,
        warmup_rounds=1,
        rounds_per_group=1,
        full_rounds_between_cycles=1,
    ),  # fmt: skip
}
EXACT = ("upload_params", "upload_bytes", "comm_cost", "num_recycled", "num_dropped_clients")
# FedPAQ seeds each client's quantization noise with a fingerprint of its update's
# bits. TFF's worker_binary is a separate TensorFlow build whose float results
# differ from this process's in the last bit, so the two paths draw different
# (equally valid) noise: the run is compared on its accounting, and the
# quantizer itself on identical inputs (below).
STOCHASTIC = {"fedpaq+luar"}


def _bn_model():
    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential(
        [
            tf.keras.Input((4,)),
            tf.keras.layers.Dense(8, name="d1"),
            tf.keras.layers.BatchNormalization(name="bn"),
            tf.keras.layers.Activation("tanh"),
            tf.keras.layers.Dense(3, name="out"),
        ]
    )


def _run(backend, options, model=None, **fit_options):
    options = dict(options)
    if "server_optimizer" in options:  # a fresh Keras optimizer per trainer
        config = options["server_optimizer"].get_config()
        options["server_optimizer"] = tf.keras.optimizers.SGD.from_config(config)
    trainer = _trainer(model or _model(), backend=backend, **options)
    assert trainer.backend == backend
    history = _fit(trainer, **fit_options)
    return history.history, [w.copy() for w in trainer.model.get_weights()]


def _assert_same_run(reference, candidate, *, rtol=1e-4, atol=1e-5, accuracy_atol=1e-5):
    (want, want_weights), (got, got_weights) = reference, candidate
    assert set(got) == set(want)
    assert all(len(v) == ROUNDS for v in got.values())
    for key, values in want.items():
        if key == "round_time":
            continue
        if key in EXACT or key == "recycled_layers":
            assert got[key] == values, key
        else:  # losses, metrics, scores, LBGM's fractional aggregation counts
            tolerance = accuracy_atol if key.endswith("accuracy") else atol
            np.testing.assert_allclose(got[key], values, rtol=rtol, atol=tolerance, err_msg=key)
    for g, w in zip(got_weights, want_weights, strict=True):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(set(CASES) - STOCHASTIC))
def test_both_backends_give_the_same_history_and_weights(name):
    options = CASES[name]
    reference = _run("tff", options)
    candidate = _run("tensorflow", options)
    _assert_same_run(reference, candidate)
    if options.get("num_recycled_layers"):
        recycled = reference[0]["recycled_layers"]
        assert recycled[0] == [] and all(len(r) == 1 for r in recycled[1:])


def test_fedpaq_runs_alike_on_both_backends():
    options = CASES["fedpaq+luar"]
    runs = {backend: _run(backend, options) for backend in ("tff", "tensorflow")}
    (want, _), (got, _) = runs["tff"], runs["tensorflow"]
    assert set(got) == set(want)
    trainer = _trainer(**options)
    sizes = {v.name: v.size for v in trainer.layout.trainable}
    for history, _ in runs.values():  # the upload follows from what was recycled
        for t in range(ROUNDS):
            sent = sum(n for name, n in sizes.items() if name not in history["recycled_layers"][t])
            assert history["upload_params"][t] == 3 * sent  # 3 clients per round
    assert got["upload_params"][0] == want["upload_params"][0]
    np.testing.assert_allclose(got["loss"], want["loss"], atol=0.15)


def test_the_quantizer_gives_the_same_result_on_both_backends():
    from keras_luar.aggregators import QuantizationFactory

    value_type = tff.types.to_type([(np.float32, (6, 4)), (np.float32, (4,))])
    process = QuantizationFactory(4, seed=7).create(value_type, tff.TensorType(np.float32))
    rng = np.random.default_rng(0)
    values = [[rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
              for _ in range(3)]  # fmt: skip
    weights = [1.0, 2.0, 1.0]

    def two_rounds():
        state = process.initialize()
        first = process.next(state, values, weights)
        return first.result, process.next(first.state, values, weights).result

    reference = two_rounds()
    with tff.framework.get_context_stack().install(InProcessContext()):
        got = two_rounds()
    for g, w in zip(tf.nest.flatten(got), tf.nest.flatten(reference), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
    # Rounds draw different noise, so the two results differ from each other.
    assert not np.allclose(reference[0][0], reference[1][0])


def test_batchnorm_statistics_and_file_datasets_in_process():
    options = dict(algorithm="fedluar", num_recycled_layers=1, bn_statistics="average")
    reference = _run("tff", options, model=_bn_model())
    candidate = _run("tensorflow", options, model=_bn_model(), client_data_cache="files")
    _assert_same_run(reference, candidate)
    # The averaged moving statistics moved away from their initial values.
    moving_mean = reference[1][4]  # d1 kernel, d1 bias, bn gamma, beta, moving mean, ...
    assert np.abs(moving_mean).max() > 0


def test_a_checkpoint_of_one_backend_resumes_on_the_other(tmp_path):
    options = CASES["fedluar"]
    uninterrupted = _run("tensorflow", options)
    trainer = _trainer(backend="tff", **options)
    _fit(trainer, rounds=2, checkpoint_dir=str(tmp_path))
    resumed = _trainer(backend="tensorflow", **options)
    history = _fit(resumed, checkpoint_dir=str(tmp_path))
    assert history.history["recycled_layers"] == uninterrupted[0]["recycled_layers"]
    for got, want in zip(resumed.model.get_weights(), uninterrupted[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_callbacks_set_the_client_learning_rate_in_process():
    trainer = _trainer(backend="tensorflow", **CASES["fedavg"])
    initial = [w.copy() for w in trainer.model.get_weights()]
    zero = tf.keras.callbacks.LearningRateScheduler(lambda round_num, lr: 0.0)
    history = _fit(trainer, callbacks=[zero])
    assert len(history.history["loss"]) == ROUNDS
    for got, want in zip(trainer.model.get_weights(), initial, strict=True):
        np.testing.assert_array_equal(got, want)


def test_auto_picks_the_in_process_backend_with_and_without_a_gpu(monkeypatch):
    assert backends.resolve_backend("tff") == "tff"
    assert backends.resolve_backend("tensorflow") == "tensorflow"
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    assert backends.resolve_backend("auto") == "tensorflow"
    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu])
    assert backends.resolve_backend("auto") == "tensorflow"


def test_an_unknown_backend_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"argument `backend`.*Received: backend='gpu'"):
        _trainer(backend="gpu")
    assert _client_data()  # nothing ran


# ---- the context on its own, on plain TFF computations -------------------------------------


@tff.tensorflow.computation(tff.SequenceType(np.float32))
def _dataset_sum(ds):
    return ds.reduce(np.float32(0.0), lambda total, x: total + x)


@tff.tensorflow.computation(np.float32, np.float32)
def _scaled(x, factor):
    variable = tf.Variable(1.0)  # a variable, initialized by the block's init op
    return x * factor * variable


@tff.federated_computation(
    tff.FederatedType(np.float32, tff.SERVER),
    tff.FederatedType(tff.SequenceType(np.float32), tff.CLIENTS),
    tff.FederatedType(np.float32, tff.CLIENTS),
)
def _round(factor, data, weights):
    sums = tff.federated_map(_dataset_sum, data)
    scaled = tff.federated_map(_scaled, (sums, tff.federated_broadcast(factor)))
    return collections.OrderedDict(
        mean=tff.federated_mean(scaled, weights),
        total=tff.federated_sum(scaled),
        both=tff.federated_zip((tff.federated_mean(sums), factor)),
    )


def test_context_runs_federated_intrinsics_like_the_cpp_runtime():
    values = [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]]
    data = [tf.data.Dataset.from_tensor_slices(np.asarray(v, np.float32)) for v in values]
    weights = [1.0, 2.0, 3.0]
    reference = _round(2.0, data, weights)
    with tff.framework.get_context_stack().install(InProcessContext()):
        got = _round(2.0, data, weights)
    sums = np.array([3.0, 3.0, 15.0])
    assert list(got) == ["mean", "total", "both"]
    np.testing.assert_allclose(got["mean"], np.average(2 * sums, weights=weights), rtol=1e-6)
    np.testing.assert_allclose(got["total"], 2 * sums.sum(), rtol=1e-6)
    np.testing.assert_allclose(got["both"][0], sums.mean(), rtol=1e-6)
    assert got["both"][1] == 2.0
    for key in got:
        np.testing.assert_allclose(
            tf.nest.flatten(got[key]), tf.nest.flatten(reference[key]), rtol=1e-6
        )


@tff.tensorflow.computation(np.float32, np.float32)
def _stateful_block(x, unused):
    # A variable set by the init op, changed by the body, read for the result; a
    # parameter the result does not need; an op colocated with a parameter.
    variable = tf.Variable(3.0)
    with tf.control_dependencies([variable.assign_add(x)]):
        total = variable.read_value()
    with tf.compat.v1.colocate_with(x):
        doubled = 2.0 * x
    return total, doubled


@tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
def _stateful_round(xs):
    return tff.federated_map(_stateful_block, (xs, xs))


@pytest.mark.parametrize(
    "context", [dict(), dict(trace=False), dict(parallel_clients=2)], ids=str
)  # fmt: skip
def test_a_block_runs_its_init_op_first_on_fresh_variables_every_call(context):
    # TFF runs a block as two session runs, the init op then the results; in
    # process both are one function, and the results must still see the
    # initialized variables (3 + x, never an uninitialized read or a previous
    # client's 3 + x + x').
    xs = [1.0, 10.0, 100.0, 1000.0]
    expected = [(3.0 + x, 2.0 * x) for x in xs]
    assert [tuple(r) for r in _stateful_round(xs)] == expected  # TFF's runtime
    with tff.framework.get_context_stack().install(InProcessContext(**context)):
        for _ in range(2):
            assert [tuple(r) for r in _stateful_round(xs)] == expected


def test_block_parts_pass_a_parameter_through_and_skip_an_unread_one():
    # TFF's compiler makes blocks whose result is bound to a parameter's placeholder.
    from keras_luar import _tff_internals
    from keras_luar.backends.in_process.graph_defs import BlockParts

    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [], name="x")
        tf.compat.v1.placeholder(tf.float32, [2], name="unread")
        y = tf.compat.v1.placeholder(tf.int32, [], name="y")
        doubled = tf.multiply(x, 2.0, name="doubled")
    parts = BlockParts(
        graph.as_graph_def(), ["x:0", "unread:0", "y:0"], [doubled.name, y.name], None
    )
    assert not parts.stateful
    assert [spec for spec in parts.input_specs] == [
        ([], tf.float32),
        ([2], tf.float32),
        ([], tf.int32),
    ]
    specs = [tf.TensorSpec(shape, dtype) for shape, dtype in parts.input_specs]
    function = _tff_internals.graph_function(
        lambda *inputs: parts.import_into_function(list(inputs), after=[]), specs, {}
    )
    got = function(tf.constant(1.5), tf.zeros([2]), tf.constant(7))
    assert [t.numpy() for t in got] == [3.0, 7]


def test_context_refuses_client_data_that_is_not_a_dataset():
    with tff.framework.get_context_stack().install(InProcessContext()):
        with pytest.raises(TypeError, match="tf.data.Dataset"):
            _round(2.0, [[1.0, 2.0]], [1.0])


def test_mixed_precision_trains_clients_in_bfloat16_on_both_backends():
    options = dict(CASES["fedluar"], mixed_precision="mixed_bfloat16")
    reference = _run("tff", options)
    candidate = _run("tensorflow", options)
    # TFF's worker_binary is a TensorFlow build of its own: on a CPU with native
    # bfloat16 instructions (AVX512_BF16, AMX) this process's kernels round bfloat16
    # differently from the worker's. The runs then agree to bfloat16's precision (8
    # bits of mantissa), and a client's accuracy may differ by an example or two of
    # its 72 (3 clients x 3 steps x batch 8), while what is recycled and sent is equal.
    _assert_same_run(reference, candidate, rtol=2e-2, atol=2e-3, accuracy_atol=2.5 / 72)
    full = _run("tensorflow", CASES["fedluar"])
    assert all(w.dtype == np.float32 for w in candidate[1])  # variables stay float32
    # bfloat16 compute rounds differently: the losses move, but only a little.
    assert not np.allclose(candidate[0]["loss"], full[0]["loss"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(candidate[0]["loss"], full[0]["loss"], rtol=0.05)
    with pytest.raises(ValueError, match=r"argument `mixed_precision`.*'float8'"):
        _trainer(mixed_precision="float8")


def _three_rounds(name="fedluar"):
    """Runs three rounds of `name` under a given context; returns (metrics, weights)."""
    trainer = _trainer(backend="tensorflow", **CASES[name])
    inputs = _round_inputs(trainer, _client_data())
    process = trainer.build_process(inputs.dataset(0, 0).element_spec)

    def rounds(context):
        with tff.framework.get_context_stack().install(context):
            state = process.initialize()
            for t in range(3):
                data = [inputs.dataset(i, t) for i in range(4)]
                if trainer.client_weighting == "example":  # FedPart: by data set size
                    data = [sized_client_data(ds, 20 + i) for i, ds in enumerate(data)]
                output = process.next(state, data)
                state = output.state
            metrics = tf.nest.flatten(output.metrics)
            return metrics, process.get_model_weights(state).trainable

    return rounds


def _assert_bitwise_equal(a, b):
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["fedluar", "fedpart", "fedopt+luar"])
def test_a_traced_round_is_bit_for_bit_the_python_walk(name):
    # The walk calls every block from Python; tracing turns the same calls into
    # one TensorFlow function, with client i on copy i mod parallel_clients.
    rounds = _three_rounds(name)
    walked = rounds(InProcessContext(trace=False))
    _assert_bitwise_equal(rounds(InProcessContext()), walked)
    _assert_bitwise_equal(rounds(InProcessContext(parallel_clients=3)), walked)


def test_parallel_clients_give_the_same_result_as_one_at_a_time():
    rounds = _three_rounds()
    sequential = rounds(InProcessContext(parallel_clients=1))
    _assert_bitwise_equal(rounds(InProcessContext(parallel_clients=2)), sequential)
    # Walked in threads, each thread with its own block copies.
    _assert_bitwise_equal(rounds(InProcessContext(parallel_clients=3, trace=False)), sequential)
    with pytest.raises(ValueError, match="parallel_clients"):
        InProcessContext(parallel_clients=0)


def test_tffs_own_grappler_pass_gives_the_same_round_up_to_rounding():
    rounds = _three_rounds()
    default = rounds(InProcessContext())
    with_pass = rounds(InProcessContext(tff_grappler=True))
    for x, y in zip(tf.nest.flatten(with_pass), tf.nest.flatten(default), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    for flag in ("trace", "tff_grappler"):
        with pytest.raises(TypeError, match=rf"argument `{flag}`.*'yes'"):
            InProcessContext(**{flag: "yes"})


def test_the_trainer_trains_two_clients_at_once_in_process_by_default():
    assert _trainer(backend="tensorflow").parallel_clients == 2
    assert _trainer(backend="tff").parallel_clients == 1
    assert _trainer(backend="tensorflow", parallel_clients=1).parallel_clients == 1
