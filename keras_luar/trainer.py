"""`FederatedTrainer`: federated training of a Keras model with the habits of `model.fit`."""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import backends, layers
from keras_luar._checkpoint import RoundCheckpoint
from keras_luar._keras_compat import (
    EveryName,
    check_metrics,
    global_seed,
    is_subclassed,
    loss_factory,
    metric_factories,
    restore_keras_v2_classes,
)
from keras_luar._validation import check_int
from keras_luar.aggregators import LuarFactory, with_global_weight_norms
from keras_luar.algorithms import registry
from keras_luar.algorithms.client_work import build_learning_process
from keras_luar.algorithms.lbgm import DEFAULT_WEIGHTINGS
from keras_luar.algorithms.stateful import StatefulClientProcess
from keras_luar.algorithms.weighting import check_weighting, sized_client_data
from keras_luar.data.clients import (
    as_client_datasets,
    check_client_datasets,
    client_data_sizes,
)
from keras_luar.data.records import read_client_records, write_client_records
from keras_luar.optimizers import to_tff_optimizer

ALGORITHMS = tuple(registry.ALGORITHMS)


def round_dataset_options() -> tf.data.Options:
    """tf.data options for a client's data of one round.

    Every round makes a fresh iterator over each sampled client's data, for
    only τ steps. At each iterator's creation tf.data would rewrite the
    pipeline with its default graph optimizations and start an autotuning
    model, which cost about 10 ms per client on a CPU and cannot pay off in
    τ steps; both are off here (set on each client's dataset, they hold for
    the pipelines built on it). The elements and their order do not change
    (``tests/test_trainer.py`` checks this).
    """
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    return options


class FederatedTrainer:
    """Trains a Keras model with FedLUAR or FedAvg on TFF, the way `model.fit` trains.

    Args:
      model: A built `tf.keras` Sequential or functional model. It is cloned for
        the clients and, after every round, holds the global weights.
      loss: A Keras loss, as in `model.compile`.
      metrics: Keras metrics, as in `model.compile` (``"accuracy"`` is resolved
        from the loss, as Keras does).
      algorithm: One of ``"fedavg"``, ``"fedluar"``, ``"fedprox"``,
        ``"fedopt"``, ``"fedpaq"``, ``"fedlama"``, ``"lbgm"``, ``"fedpart"``
        (see `keras_luar.algorithms.registry.ALGORITHMS`).
      num_recycled_layers: LUAR's δ. None means 2 for ``"fedluar"`` and 0
        (no recycling) otherwise; δ > 0 puts LUAR on top of ``"fedprox"``,
        ``"fedopt"`` and ``"fedpaq"``. Always 0 for ``"fedavg"``; the other
        methods do not take it.
      local_steps: τ, local optimizer steps per client per round.
      batch_size: Local batch size for unbatched client data.
      client_optimizer: A Keras optimizer (SGD, Adam, RMSprop, Adagrad) or a
        `tff.learning.optimizers.Optimizer`; defaults to SGD(0.01, momentum=0.9).
        Each client starts every round with fresh optimizer state.
      server_optimizer: None applies the aggregated update as is (the paper);
        otherwise an optimizer as above, given the aggregated update.
        Required by ``"fedopt"`` (the paper uses SGD with learning rate 0.9 on
        CIFAR-10 and 1.2 on FEMNIST).
      client_weighting: How a client's update counts in the server's mean:
        ``"uniform"`` (1 each), ``"example"`` (the number of examples in the
        client's data set, n_i, counted before the first round) or
        ``"round_examples"`` (the examples it trained on in the round: τ·B
        for every client of unbatched data, so in practice uniform). None
        takes the method's own, as its official code does: uniform for
        FedAvg, FedLUAR, FedProx, FedOpt, FedPAQ, FedLAMA and LBGM's
        ``"paper"`` variant, data set size for LBGM and FedPart.
      bn_statistics: What happens to non-trainable variables (BatchNorm moving
        statistics). ``"average"`` (the default of every method): clients
        start from the global statistics and the weighted mean of theirs
        after training becomes the global model's, every round, as the
        official FedLUAR code does. ``"local"`` (FedPart and FedLAMA, the
        official rule of Fling's FedPart and close to FedLAMA's per-slot
        copies): every client keeps its statistics between its rounds and
        trains on from them; the global model then carries the weighted mean
        of the round's clients' statistics, so that it never evaluates with
        the initial ones.
      augmentation: Optional ``fn(x, seed) -> x`` applied to every training
        example of unbatched client data in every round, after the shuffle, with
        a stateless seed that differs per run, round, client and example (e.g.
        `keras_luar.data.augment.random_crop_flip()`, the official CIFAR one).
      seed: Seeds client sampling (by (seed, round)), local shuffling and the
        methods' randomness.
      backend: Where rounds execute (`keras_luar.backends`): ``"tff"`` is
        TFF's C++ runtime (CPU only); ``"tensorflow"`` runs the same
        computations in this process's TensorFlow runtime, on the GPU when
        there is one, without serializing client data; ``"auto"`` (default)
        takes ``"tensorflow"`` when TensorFlow sees a GPU, else ``"tff"``.
        Both give the same History and, up to floating-point rounding, the
        same weights, and a checkpoint of one resumes on the other.
      parallel_clients: With ``backend="tensorflow"``, how many of a
        round's clients train at once (each with its own copy of the model's
        variables); None (default) means 2 there. The result does not depend
        on it, bit for bit (TFF's runtime already trains clients
        concurrently).
      workers: None (default) runs rounds on this machine. A list of
        ``"host:port"`` addresses of TFF workers (started with ``keras-luar
        worker --port N``) sends each round's client work to them, one
        client call at a time, while aggregation and the server step run
        here in process (so `backend` must be ``"auto"`` or ``"tensorflow"``).
        `fit` fails before the first round when no worker answers; a worker
        that dies mid-round has its calls retried on the others, with the
        same result. See ``docs/howto/workers.md``.
      mixed_precision: None trains clients in float32. ``"mixed_bfloat16"``
        or ``"mixed_float16"`` gives every layer of the clients' model copy
        that Keras dtype policy (float32 variables, low-precision compute)
        except the output layers, which stay float32. bfloat16 needs no loss
        scaling and suits recent GPUs; float16 runs without loss scaling here
        (TFF's optimizers have none), so tiny gradients may underflow. The
        global model, the aggregation and the server stay float32.
      **algorithm_options: The chosen algorithm's options: ``proximal_strength``
        (FedProx μ, default 0.001); ``quantization_levels`` (FedPAQ s, default
        16), ``requantize_aggregate`` (None: quantize the aggregate again at the
        server with LUAR on top, as the official FedPAQ + LUAR code does, and
        not without) and ``quantize_statistics`` (default True: clients send
        the quantized change of their BatchNorm statistics, as the official
        FedPAQ does); ``aggregation_interval`` and ``fedavg_rounds`` (FedLAMA
        φ = 2 and its 8 FedAvg warm-up rounds); ``lbgm_threshold``,
        ``error_feedback``, ``lbgm_variant`` (LBGM: the official per-tensor
        method, threshold 0.2 by default, or the FedLUAR paper's
        ``"paper"`` baseline, 0.95) and ``server_momentum`` (LBGM's official
        heavy-ball server step uses 0.9; default 0, FedAvg's step);
        ``warmup_rounds``, ``rounds_per_group``, ``full_rounds_between_cycles``
        and ``groups`` (FedPart).

    Raises:
      TypeError: For a model TFF cannot wrap (subclassed), bad argument types
        or an option the algorithm does not take.
      ValueError: For bad values, e.g. an unknown algorithm (the message lists
        the known ones) or δ not below the number of candidates.

    Examples:
      >>> trainer = FederatedTrainer(model, loss=loss, metrics=["accuracy"])  # doctest: +SKIP
      >>> history = trainer.fit(client_data, rounds=50, clients_per_round=32)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: tf.keras.Model,
        *,
        loss: Any,
        metrics: list | None = None,
        algorithm: str = "fedluar",
        num_recycled_layers: int | None = None,
        local_steps: int = 20,
        batch_size: int = 20,
        client_optimizer: Any = None,
        server_optimizer: Any = None,
        client_weighting: str | None = None,
        bn_statistics: str | None = None,
        augmentation: Any = None,
        seed: int = 0,
        backend: str = "auto",
        parallel_clients: int | None = None,
        workers: Any = None,
        mixed_precision: str | None = None,
        **algorithm_options: Any,
    ):
        if not isinstance(model, tf.keras.Model):
            raise TypeError(
                "Invalid value for argument `model`. Expected a tf.keras.Model. "
                f"Received: model of type {type(model).__name__}"
            )
        if is_subclassed(model):
            raise TypeError(
                "Invalid value for argument `model`. TFF needs a model it can clone for the "
                "clients, which tf.keras.models.clone_model cannot do for subclassed models. "
                "Rebuild it as a Sequential or functional model (subclassed layers inside "
                f"are fine). Received: a subclassed {type(model).__name__}"
            )
        self._layout = layers.describe_model(model)
        spec, options = registry.resolve(algorithm, algorithm_options)
        if num_recycled_layers is None:
            num_recycled_layers = 2 if algorithm == "fedluar" else 0
        delta = check_int("num_recycled_layers", num_recycled_layers, 0)
        if delta > 0 and not spec.luar and algorithm != "fedavg":
            takes = ", ".join(n for n, s in registry.ALGORITHMS.items() if s.luar)
            raise ValueError(
                f"Invalid value for argument `num_recycled_layers`. Algorithm {algorithm!r} "
                f"cannot use LUAR as its aggregation step (those that can: {takes}). "
                f"Received: num_recycled_layers={delta}"
            )
        self.algorithm = algorithm
        self.algorithm_options = options
        self._spec = spec
        self.num_recycled_layers = 0 if algorithm == "fedavg" else delta
        num_candidates = self._layout.num_candidates
        if self.num_recycled_layers > 0 and self.num_recycled_layers >= num_candidates:
            names = ", ".join(self._layout.candidate_names) or "none"
            raise ValueError(
                "Invalid value for argument `num_recycled_layers`. Expected an int smaller "
                f"than the model's number of candidate layers L={num_candidates} ({names}). "
                f"Received: num_recycled_layers={delta}"
            )
        self.local_steps = check_int("local_steps", local_steps, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        if client_weighting is None:
            client_weighting = spec.client_weighting
            if algorithm == "lbgm":
                client_weighting = DEFAULT_WEIGHTINGS[options["lbgm_variant"]]
        self.client_weighting = check_weighting("client_weighting", client_weighting)
        self._loss_fn = loss_factory(loss)
        self._metrics = check_metrics(metrics)
        if client_optimizer is None:
            client_optimizer = tf.keras.optimizers.SGD(0.01, momentum=0.9)
        self._client_optimizer = to_tff_optimizer(client_optimizer, "client_optimizer")
        if algorithm == "fedlama" and server_optimizer is not None:
            raise ValueError(
                "Invalid value for argument `server_optimizer`. FedLAMA averages client "
                "models and takes no server optimizer. Received: "
                f"server_optimizer={type(server_optimizer).__name__}"
            )
        self._server_optimizer_given = server_optimizer is not None
        if algorithm == "fedopt" and server_optimizer is None:
            raise ValueError(
                "Invalid value for argument `server_optimizer`. Algorithm 'fedopt' needs a "
                "server optimizer, e.g. tf.keras.optimizers.SGD(1.2) (the paper's FEMNIST "
                "setting) or tf.keras.optimizers.Adam(0.01). Received: server_optimizer=None"
            )
        self._server_optimizer = (
            tff.learning.optimizers.build_sgdm(1.0)
            if server_optimizer is None
            else to_tff_optimizer(server_optimizer, "server_optimizer")
        )
        # The model is compiled with a Keras optimizer that carries the client learning
        # rate, so stock callbacks (LearningRateScheduler, ReduceLROnPlateau) can set it.
        probe_state = self._client_optimizer.initialize(tf.TensorSpec([], tf.float32))
        lr = self._client_optimizer.get_hparams(probe_state).get("learning_rate", 0.01)
        model.compile(
            optimizer=tf.keras.optimizers.SGD(float(lr)),
            loss=self._loss_fn(),
            metrics=list(self._metrics),  # Keras resolves them for `evaluate`, as in compile
        )
        self.model = model
        # Names recycled in the round that just ended (readable from callbacks).
        self.last_recycled_layers: list[str] = []
        # Per trainable variable: rounds in which its fresh aggregate was applied
        # (fractional for LBGM's per-client decisions); the paper's Figure 3.
        self.aggregation_counts: dict[str, float] = {v.name: 0.0 for v in self._layout.trainable}
        self._groups = None
        if algorithm == "fedpart":
            from keras_luar.algorithms.fedpart import layer_groups

            self._groups = layer_groups(model, groups=options["groups"])
        if bn_statistics is None:
            bn_statistics = spec.bn_statistics[0]
        if bn_statistics not in spec.bn_statistics:
            raise ValueError(
                f"Invalid value for argument `bn_statistics`. Expected one of "
                f"{spec.bn_statistics} for algorithm {algorithm!r}. Received: "
                f"bn_statistics={bn_statistics!r}"
            )
        self.bn_statistics = bn_statistics
        if augmentation is not None and not callable(augmentation):
            raise TypeError(
                "Invalid value for argument `augmentation`. Expected None or a function "
                f"(x, seed) -> x. Received: augmentation of type {type(augmentation).__name__}"
            )
        self.augmentation = augmentation
        self.workers = None
        if workers is not None:
            self.workers = backends.check_addresses(workers)
            if backend not in ("auto", "tensorflow"):
                raise ValueError(
                    "Invalid value for argument `backend`. With `workers`, rounds are driven "
                    "in process and the clients' work runs on the workers: expected 'auto' or "
                    f"'tensorflow'. Received: backend={backend!r}"
                )
            backend = "tensorflow"
        self.backend = backends.resolve_backend(backend)
        if parallel_clients is None:
            parallel_clients = 2 if self.backend == "tensorflow" and workers is None else 1
        self.parallel_clients = check_int("parallel_clients", parallel_clients, 1)
        if self.parallel_clients > 1 and self.backend != "tensorflow":
            raise ValueError(
                "Invalid value for argument `parallel_clients`. It applies to "
                f"backend='tensorflow' only, and backend={backend!r} runs on TFF's runtime"
                f"{' (TensorFlow sees no GPU)' if backend == 'auto' else ''}. Received: "
                f"parallel_clients={parallel_clients}"
            )
        if mixed_precision not in (None, "mixed_bfloat16", "mixed_float16"):
            raise ValueError(
                "Invalid value for argument `mixed_precision`. Expected None, "
                "'mixed_bfloat16' or 'mixed_float16'. Received: "
                f"mixed_precision={mixed_precision!r}"
            )
        self.mixed_precision = mixed_precision

    @property
    def layout(self) -> layers.ModelLayout:
        """The model's recycling candidates and always-sent variables."""
        return self._layout

    # ---- building blocks ---------------------------------------------------------------

    def _build_process(self, input_spec):
        loss_fn, template = self._loss_fn, self.model
        label_spec = tf.nest.flatten(input_spec[1])[0]
        metric_fns = metric_factories(
            self._metrics, label_spec.shape, tf.nest.flatten(template.outputs)[0].shape
        )
        clone_function = None
        if self.mixed_precision is not None:
            policy, outputs = self.mixed_precision, set(template.output_names)

            def clone_function(layer):
                config = layer.get_config()
                if layer.name not in outputs:  # logits stay float32, as Keras advises
                    config["dtype"] = policy
                return layer.__class__.from_config(config)

        def model_fn():
            with warnings.catch_warnings():
                # TFF warns that BatchNorm statistics "won't be updated during the
                # training"; here every method handles them (see `bn_statistics`).
                warnings.filterwarnings("ignore", message="Batch Normalization contains")
                return tff.learning.models.from_keras_model(
                    tf.keras.models.clone_model(template, clone_function=clone_function),
                    loss=loss_fn(),
                    input_spec=input_spec,
                    metrics=[f() for f in metric_fns],
                )

        process = self._build_algorithm(model_fn)
        restore_keras_v2_classes(self.model)
        return process

    def _build_algorithm(self, model_fn):
        name, options = self.algorithm, self.algorithm_options
        common = dict(
            client_optimizer=self._client_optimizer,
            server_optimizer=self._server_optimizer,
        )
        if name == "fedlama":
            from keras_luar.algorithms.fedlama import build_fedlama

            return build_fedlama(
                model_fn, client_optimizer=self._client_optimizer, local_steps=self.local_steps, seed=self.seed,
                client_weighting=self.client_weighting, bn_statistics=self.bn_statistics,
                aggregation_interval=options["aggregation_interval"],
                fedavg_rounds=options["fedavg_rounds"],
            )  # fmt: skip
        if name == "lbgm":
            from keras_luar.algorithms.lbgm import build_lbgm

            if options["server_momentum"] and self._server_optimizer_given:
                raise ValueError(
                    "Invalid value for argument `server_momentum`. Expected 0 when a "
                    "server_optimizer is given (put the momentum in the optimizer). "
                    f"Received: server_momentum={options['server_momentum']!r}"
                )
            return build_lbgm(
                model_fn, client_optimizer=self._client_optimizer, local_steps=self.local_steps,
                server_optimizer=self._server_optimizer if self._server_optimizer_given else None,
                server_momentum=options["server_momentum"], seed=self.seed,
                client_weighting=self.client_weighting,
                threshold=options["lbgm_threshold"], error_feedback=options["error_feedback"],
                variant=options["lbgm_variant"],
            )  # fmt: skip
        if name == "fedpart":
            from keras_luar.algorithms.fedpart import build_fedpart

            return build_fedpart(
                model_fn, **common, groups=self._groups, local_steps=self.local_steps,
                seed=self.seed, client_weighting=self.client_weighting,
                warmup_rounds=options["warmup_rounds"],
                rounds_per_group=options["rounds_per_group"],
                full_rounds_between_cycles=options["full_rounds_between_cycles"],
                bn_statistics=self.bn_statistics,
            )  # fmt: skip
        # FedAvg, FedLUAR, FedProx, FedOpt and FedPAQ: TFF's FedAvg composition with
        # LuarFactory as the aggregation step (δ = 0 is exactly its inner aggregation).
        inner = statistics_quantizer = None
        if name == "fedpaq":
            from keras_luar.aggregators import QuantizationFactory

            requantize = options["requantize_aggregate"]
            if requantize is None:  # the official FedPAQ + LUAR does, FedPAQ does not
                requantize = self.num_recycled_layers > 0
            inner = QuantizationFactory(
                options["quantization_levels"], seed=self.seed, requantize=requantize
            )
            if options["quantize_statistics"]:
                statistics_quantizer = inner
        factory = LuarFactory(
            self.num_recycled_layers,
            seed=self.seed,
            inner_factory=inner,
            client_weighting="example",  # the weights the client work computes
            variable_names=[v.name for v in self._layout.trainable],
        )
        process = build_learning_process(
            model_fn,
            **common,
            model_aggregator=factory,
            proximal_strength=options.get("proximal_strength", 0.0) if name == "fedprox" else 0.0,
            client_weighting=self.client_weighting,
            bn_statistics=self.bn_statistics,
            statistics_quantizer=statistics_quantizer,
        )
        return with_global_weight_norms(process)

    def _prepare(self, ds, batched, shuffle_seed, buffer):
        """One round's local data of a client: τ batches, shuffled unless pre-batched."""
        if batched:
            return ds.repeat().take(self.local_steps)
        ds = ds.shuffle(buffer, seed=shuffle_seed).repeat()
        if self.augmentation is not None:
            augment, run_seed = self.augmentation, self.seed

            def augmented(index, element):
                seed = tf.random.experimental.stateless_fold_in(
                    tf.stack([tf.cast(shuffle_seed, tf.int64), index]), run_seed
                )
                x, *rest = element
                return (augment(x, seed), *rest)

            ds = ds.take(self.local_steps * self.batch_size).enumerate().map(augmented)
        return ds.batch(self.batch_size).take(self.local_steps)

    @staticmethod
    def _shuffle_seed(round_num: int, client_index: int) -> int:
        return (round_num * 100_003 + client_index) % (2**31 - 1)

    def _round_dataset(self, ds, batched, round_num, client_index, buffer=None):
        """A client's dataset for one round; the same batches for the same seeds."""
        if buffer is None:
            buffer = int(ds.cardinality()) if ds.cardinality() > 0 else 10_000
        seed = tf.constant(self._shuffle_seed(round_num, client_index), tf.int64)
        with global_seed(self.seed):
            return self._prepare(ds, batched, seed, buffer)

    def _sample(self, num_clients, clients_per_round, round_num):
        rng = np.random.default_rng([self.seed, round_num])
        return np.sort(rng.choice(num_clients, size=clients_per_round, replace=False))

    def _as_eval_data(self, data):
        if isinstance(data, tuple | list) and len(data) == 2:
            data = tf.data.Dataset.from_tensor_slices(tuple(data))
        if not isinstance(data, tf.data.Dataset):
            raise TypeError(
                "Invalid value for evaluation data. Expected a tf.data.Dataset or (x, y). "
                f"Received: {type(data).__name__}"
            )
        rank = tf.nest.flatten(data.element_spec[0])[0].shape.rank
        batched_rank = tf.nest.flatten(self.model.inputs)[0].shape.rank
        return data if rank == batched_rank else data.batch(256)

    # ---- public API --------------------------------------------------------------------

    def fit(
        self,
        client_data: Any,
        *,
        rounds: int,
        clients_per_round: int,
        validation_data: Any = None,
        callbacks: list[tf.keras.callbacks.Callback] | None = None,
        verbose: int = 1,
        checkpoint_dir: str | None = None,
        validate_data: bool = True,
        client_data_cache: str = "auto",
    ) -> tf.keras.callbacks.History:
        """Runs federated rounds; returns a Keras `History` with one entry per round.

        Args:
          client_data: Per-client data: a list or dict of `tf.data.Dataset`
            (unbatched or batched), a `tff.simulation.datasets.ClientData`, a
            `keras_luar.data.FederatedData`, or ``(x, y, partitions)``.
          rounds: Total number of rounds (like ``epochs``; a resumed run stops
            at the same total).
          clients_per_round: Clients sampled per round, seeded by (seed, round).
          validation_data: A dataset or ``(x, y)``, evaluated after each round
            into ``val_`` entries.
          callbacks: Keras callbacks; they see `trainer.model` with the global
            weights after every round.
          verbose: 0 silent, 1 progress bar over rounds, 2 one line per round.
          checkpoint_dir: If set, state is saved after every round and a later
            `fit` with the same directory resumes after the last saved round.
          validate_data: Read all client data once before the first round to
            check labels and finiteness.
          client_data_cache: How client data reaches TFF each round. TFF
            serializes a dataset, data included, on every call: ``"files"``
            writes each client once to a TFRecord file and passes datasets that
            read it (the call then carries only a file name); ``"memory"``
            passes the datasets as they are. ``"auto"`` uses files when a
            client may hold more than 1 MB on the ``"tff"`` backend, where they
            are faster, and memory on ``"tensorflow"``, which serializes
            nothing; both give the same batches. With ``workers``, ``"auto"``
            is ``"memory"``: each call carries its client's data, so the
            workers need no access to this machine's files.

        Returns:
          `History` whose ``history`` has, per round: ``loss`` and metrics over
          the round's clients, ``val_`` metrics, ``upload_params``,
          ``upload_bytes``, ``comm_cost`` (cumulative upload relative to
          FedAvg), ``num_recycled``, ``num_dropped_clients``, ``round_time``
          (seconds), ``recycled_layers`` (names) and ``layer_scores`` (the
          candidates' scores s_l after the round, aligned with
          ``trainer.layout.candidate_names``; FedAvg and the LUAR methods),
          plus ``aggregated`` (per trainable variable, 1 if its fresh
          aggregate was applied that round).

        Raises:
          ValueError / TypeError: For bad client data or arguments, before any round.
          keras_luar.backends.WorkersUnavailableError: With ``workers``, when
            no worker answers before the first round (the message names every
            address tried), or when every worker has failed mid-run and none
            answers again.
        """
        rounds = check_int("rounds", rounds, 1)
        datasets = as_client_datasets(client_data)
        clients_per_round = check_int("clients_per_round", clients_per_round, 1)
        if clients_per_round > len(datasets):
            raise ValueError(
                "Invalid value for argument `clients_per_round`. Expected at most the "
                f"number of clients ({len(datasets)}). Received: "
                f"clients_per_round={clients_per_round}"
            )
        if verbose not in (0, 1, 2):
            raise ValueError(
                f"Invalid value for argument `verbose`. Expected 0, 1 or 2. Received: verbose={verbose!r}"
            )
        batched = check_client_datasets(
            datasets,
            input_rank=tuple(t.shape.rank for t in tf.nest.flatten(self.model.inputs)),
            num_outputs=int(self.model.output_shape[-1]),
            scan=validate_data,
        )
        if batched and self.augmentation is not None:
            raise ValueError(
                "Invalid value for argument `client_data`. `augmentation` works on single "
                "examples; pass unbatched client datasets. Received: batched datasets"
            )
        if client_data_cache not in ("auto", "memory", "files"):
            raise ValueError(
                "Invalid value for argument `client_data_cache`. Expected 'auto', 'memory' or "
                f"'files'. Received: client_data_cache={client_data_cache!r}"
            )
        if validation_data is not None:
            validation_data = self._as_eval_data(validation_data)  # fails now, not after a round
        if client_data_cache == "auto":
            # In process, datasets are handed over as they are: files would only add reads.
            in_process = self.backend == "tensorflow"
            large = not in_process and _may_exceed(datasets, batched, 2**20)
            client_data_cache = "files" if large else "memory"
        # n_i, each client's number of examples, read before the data may move to files.
        sizes = client_data_sizes(datasets, batched=batched)
        workdir = tempfile.mkdtemp(prefix="keras_luar_clients_")
        try:
            if client_data_cache == "files":
                sources, counts = _on_disk(datasets, batched, workdir)
            else:
                sources = datasets
                counts = {cid: _count(ds) for cid, ds in datasets.items()}
            context = None
            if self.workers is not None:
                context = backends.WorkerPoolContext(self.workers)
                context.connect()  # fails now, naming the addresses, when none answers
            elif self.backend == "tensorflow":
                context = backends.InProcessContext(parallel_clients=self.parallel_clients)
            try:
                with backends.execution(self.backend, context):
                    return self._fit(
                        sources, counts, sizes, batched, rounds, clients_per_round,
                        validation_data, callbacks, verbose, checkpoint_dir,
                    )  # fmt: skip
            finally:
                if self.workers is not None:
                    context.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _fit(
        self, sources, counts, sizes, batched, rounds, clients_per_round,
        validation_data, callbacks, verbose, checkpoint_dir,
    ):  # fmt: skip
        client_ids = list(sources)
        # Set once on each client's dataset, the options hold for every round's
        # pipeline built on it.
        options = round_dataset_options()
        sources = {cid: ds.with_options(options) for cid, ds in sources.items()}
        process = self._build_process(
            self._round_dataset(sources[client_ids[0]], batched, 0, 0, 1).element_spec
        )
        stateful = isinstance(process, StatefulClientProcess)
        period = process.client_period if stateful else 1
        state = process.initialize()
        weights = tff.learning.models.ModelWeights.from_model(self.model)
        state = process.set_model_weights(
            state, tf.nest.map_structure(lambda v: v.numpy(), weights)
        )
        client_states: dict[int, Any] = {}
        fresh_client_state = process.initial_client_state() if stateful else None

        checkpoint = None
        history_entries: dict[str, list] = {}
        start_round = 0
        if checkpoint_dir is not None:
            checkpoint = RoundCheckpoint(
                checkpoint_dir, self._fingerprint(len(sources), clients_per_round)
            )
            restored = checkpoint.restore(state, fresh_client_state)  # templates of this process
            if restored is not None:
                state, start_round, history_entries, client_states = restored
                process.get_model_weights(state).assign_weights_to(self.model)

        history = tf.keras.callbacks.History()
        callback_list = tf.keras.callbacks.CallbackList(
            list(callbacks or []) + [history],
            add_history=False,
            add_progbar=False,
            model=self.model,
        )
        history.history = {k: list(v) for k, v in history_entries.items()}
        self.aggregation_counts = {v.name: 0.0 for v in self._layout.trainable}
        for row in history.history.get("aggregated", []):
            for name, value in zip(self.aggregation_counts, row, strict=True):
                self.aggregation_counts[name] += float(value)
        progbar = None
        if verbose == 1:
            progbar = tf.keras.utils.Progbar(rounds, verbose=1, unit_name="round")
            progbar.stateful_metrics = EveryName()  # the constructor would copy it to a set
        if progbar is not None and start_round:
            progbar.update(start_round)
        fedavg_bytes = self._layout.trainable_bytes
        uploaded = float(np.sum(history.history.get("upload_bytes", [])))
        fedavg_uploaded = float(start_round * clients_per_round * fedavg_bytes)
        client_lr = self._client_learning_rate(process, state)
        uses_luar = self._spec.luar or self.algorithm == "fedavg"
        self.model.stop_training = False
        callback_list.on_train_begin()
        try:
            for round_num in range(start_round, rounds):
                callback_list.on_epoch_begin(round_num)
                state, client_lr = self._sync_learning_rate(process, state, client_lr)
                began = time.perf_counter()
                # Methods that keep clients for several rounds (FedLAMA) re-sample only
                # at the start of each period.
                chosen = self._sample(
                    len(client_ids), clients_per_round, round_num - round_num % period
                )
                round_data = [
                    self._round_dataset(
                        sources[client_ids[i]], batched, round_num, int(i), counts[client_ids[i]]
                    )
                    for i in chosen
                ]
                if self.client_weighting == "example":  # each client weighs its data set size
                    round_data = [
                        sized_client_data(ds, sizes[client_ids[i]])
                        for ds, i in zip(round_data, chosen, strict=True)
                    ]
                if stateful:
                    keys = [int(i) for i in chosen]
                    if process.client_states_by == "slot":
                        keys = list(range(len(chosen)))
                    states_in = [client_states.get(k, fresh_client_state) for k in keys]
                    output = process.next(state, round_data, states_in)
                    client_states.update(zip(keys, output.client_states, strict=True))
                else:
                    output = process.next(state, round_data)
                state = output.state
                process.get_model_weights(state).assign_weights_to(self.model)
                round_time = time.perf_counter() - began
                report = self._round_report(output.metrics)
                uploaded += report["upload_bytes"]
                fedavg_uploaded += float(clients_per_round * fedavg_bytes)
                logs = {
                    k: float(v)
                    for k, v in output.metrics["client_work"]["train"].items()
                    if k not in ("num_examples", "num_batches")
                }
                logs.update(
                    upload_params=report["upload_params"],
                    upload_bytes=report["upload_bytes"],
                    comm_cost=uploaded / fedavg_uploaded,
                )
                if uses_luar:
                    logs.update(
                        num_recycled=report["num_recycled"],
                        num_dropped_clients=report["num_dropped_clients"],
                    )
                logs["round_time"] = round_time
                if validation_data is not None:
                    val = self.model.evaluate(validation_data, verbose=0, return_dict=True)
                    logs.update({f"val_{k}": float(v) for k, v in val.items()})
                self.last_recycled_layers = report["recycled"]
                for name, value in zip(self.aggregation_counts, report["aggregated"], strict=True):
                    self.aggregation_counts[name] += value
                callback_list.on_epoch_end(round_num, logs)
                if uses_luar:
                    history.history.setdefault("recycled_layers", []).append(report["recycled"])
                    history.history.setdefault("layer_scores", []).append(report["scores"])
                history.history.setdefault("aggregated", []).append(report["aggregated"])
                if checkpoint is not None:
                    checkpoint.save(state, round_num + 1, history.history, client_states)
                self._report(progbar, verbose, round_num, rounds, logs)
                if self.model.stop_training:
                    break
        finally:
            callback_list.on_train_end()
        return history

    def _round_report(self, metrics) -> dict:
        """Upload, recycled names and per-variable aggregation of one round's metrics."""
        luar = _find(metrics, "luar")
        if luar is not None:
            recycled_mask = np.asarray(luar["recycled"], bool)
            aggregated = np.ones(len(self._layout.trainable))
            aggregated[list(self._layout.candidate_indices)] = ~recycled_mask
            if int(luar["num_clients"]) == int(luar["num_dropped_clients"]):
                aggregated[:] = 0.0
            recycled = [
                n for n, m in zip(self._layout.candidate_names, recycled_mask, strict=True) if m
            ]
            return dict(
                upload_params=float(luar["upload_params"]),
                upload_bytes=float(luar["upload_bytes"]),
                num_recycled=float(luar["num_recycled"]),
                num_dropped_clients=float(luar["num_dropped_clients"]),
                recycled=recycled,
                scores=[float(v) for v in np.asarray(luar["scores"], np.float64)],
                aggregated=[float(a) for a in aggregated],
            )
        comm = _find(metrics, "communication")
        if comm is None:  # pragma: no cover - every registered algorithm reports it
            raise RuntimeError(f"Algorithm {self.algorithm!r} reported no communication.")
        return dict(
            upload_params=float(comm["upload_params"]),
            upload_bytes=float(comm["upload_bytes"]),
            recycled=[],
            aggregated=[float(a) for a in np.asarray(comm["aggregated"], np.float64)],
        )

    def evaluate(self, data: Any, **kwargs: Any) -> Any:
        """Evaluates the global model like `model.evaluate`.

        Args:
          data: A `tf.data.Dataset` (unbatched ones are batched by 256) or ``(x, y)``.
          **kwargs: Passed to `model.evaluate` (e.g. ``return_dict=True``).

        Returns:
          What `model.evaluate` returns.
        """
        return self.model.evaluate(self._as_eval_data(data), **kwargs)

    # ---- helpers -------------------------------------------------------------------------

    def _sync_learning_rate(self, process, state, current):
        """Pushes the Keras optimizer's learning rate (set by callbacks) into TFF.

        `current` is the client learning rate held in `state` (None if the client
        optimizer has none). TFF is only called when a callback changed the rate.
        Returns the state and the rate it now holds.
        """
        lr = float(np.float32(tf.keras.backend.get_value(self.model.optimizer.learning_rate)))
        if current is None or lr == current:
            return state, current
        hparams = process.get_hparams(state)
        hparams["client_work"]["learning_rate"] = np.float32(lr)
        return process.set_hparams(state, hparams), lr

    @staticmethod
    def _client_learning_rate(process, state):
        lr = process.get_hparams(state).get("client_work", {}).get("learning_rate")
        return None if lr is None else float(np.float32(lr))

    def _fingerprint(self, num_clients, clients_per_round) -> dict:
        return {
            "algorithm": self.algorithm,
            "algorithm_options": {k: v for k, v in self.algorithm_options.items()},
            "client_weighting": self.client_weighting,
            "bn_statistics": self.bn_statistics,
            "augmentation": getattr(self.augmentation, "__qualname__", None),
            "mixed_precision": self.mixed_precision,
            "num_recycled_layers": self.num_recycled_layers,
            "seed": self.seed,
            "local_steps": self.local_steps,
            "batch_size": self.batch_size,
            "num_clients": num_clients,
            "clients_per_round": clients_per_round,
            "variables": [[v.name, list(v.shape)] for v in self._layout.trainable],
        }

    @staticmethod
    def _report(progbar, verbose, round_num, rounds, logs):
        shown = [(k, v) for k, v in logs.items() if k not in ("upload_params", "upload_bytes")]
        if progbar is not None:
            progbar.update(round_num + 1, values=shown, finalize=round_num + 1 == rounds)
        elif verbose == 2:
            text = " - ".join(f"{k}: {v:.4g}" for k, v in shown)
            print(f"Round {round_num + 1}/{rounds} - {text}", flush=True)


def _find(metrics, key: str):
    """The first value stored under `key` anywhere in nested metrics, or None."""
    if isinstance(metrics, dict):
        if key in metrics:
            return metrics[key]
        for value in metrics.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _count(ds: tf.data.Dataset) -> int:
    cardinality = int(ds.cardinality())
    return cardinality if cardinality >= 0 else int(ds.reduce(0, lambda n, _: n + 1))


def _may_exceed(datasets, batched: bool, limit: int) -> bool:
    """Whether some client's data may be larger than `limit` bytes (unknown counts as yes)."""
    specs = tf.nest.flatten(next(iter(datasets.values())).element_spec)
    if batched or not all(s.shape.is_fully_defined() for s in specs):
        return True
    element = sum(s.shape.num_elements() * s.dtype.size for s in specs)
    return any(
        ds.cardinality() < 0 or int(ds.cardinality()) * element > limit for ds in datasets.values()
    )


def _on_disk(datasets, batched: bool, directory: str):
    """Writes client data to files; returns file-reading datasets and element counts.

    TFF serializes every dataset it is given, with its data, on every call. A
    dataset that reads a file serializes to a small graph naming the file.
    """
    paths, counts = write_client_records(datasets, directory, stacked=not batched)
    spec = next(iter(datasets.values())).element_spec
    return {
        cid: read_client_records(paths[cid], spec, stacked=not batched) for cid in datasets
    }, counts
