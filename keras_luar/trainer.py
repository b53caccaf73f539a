"""`FederatedTrainer`: federated training of a Keras model with the habits of `model.fit`.

A façade: `keras_luar.training.config` checks the arguments,
`keras_luar.training.client_data` and `data_checks` take the client data to each
round's inputs, `keras_luar.training.model` builds the method's TFF process (the
method itself comes from `keras_luar.algorithms.registry`), and
`keras_luar.training.loop` runs the rounds.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import tensorflow as tf

from keras_luar import backends, layers
from keras_luar._keras_compat import check_metrics, is_sparse_loss, is_subclassed, loss_factory
from keras_luar._validation import check_choice, check_int, invalid
from keras_luar.algorithms.local_training import optimizer_hparams
from keras_luar.training import console
from keras_luar.training.checkpoint import RoundCheckpoint, run_fingerprint
from keras_luar.training.client_data import (
    CACHE_MODES,
    RoundInputs,
    as_clients,
    cache_clients,
    resolve_cache_mode,
    round_dataset_options,
)
from keras_luar.training.config import TrainerConfig, make_config
from keras_luar.training.data_checks import ModelSignature, check_clients, validation_dataset
from keras_luar.training.loop import RoundLoop, RunRecord
from keras_luar.training.model import build_process

__all__ = ["FederatedTrainer", "round_dataset_options"]


class FederatedTrainer:
    """Trains a Keras model with FedLUAR or FedAvg on TFF, the way `model.fit` trains.

    Args:
      model: A built `tf.keras` Sequential or functional model. It is cloned for
        the clients and, after every round, holds the global weights.
      loss: A Keras loss, as in `model.compile`: a name
        (``"sparse_categorical_crossentropy"``), a function or a
        `tf.keras.losses.Loss`.
      metrics: Keras metrics, as in `model.compile`: names, functions or
        metric objects (``"accuracy"`` and ``"crossentropy"`` are resolved by
        the shapes of labels and output, with Keras's own rule).
      algorithm: A registered method, e.g. ``"fedluar"`` (the default) or
        ``"fedavg"``; `keras_luar.algorithms.ALGORITHMS` lists them all, with
        their options and rules.
      num_recycled_layers: LUAR's δ. None means 2 for ``"fedluar"`` (1 for a
        model with 2 candidate layers) and 0 (no recycling) otherwise; δ > 0
        puts LUAR on top of the methods that take it (``"fedprox"``,
        ``"fedopt"``, ``"fedpaq"``); the others raise for δ > 0.
      local_steps: τ, local optimizer steps per client per round.
      batch_size: Local batch size for unbatched client data (default 20).
        Pre-batched client data keeps its own batches: giving `batch_size`
        with it raises, as in Keras.
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
        takes ``"tensorflow"``, which the benchmarks measure faster on a CPU
        too. ``"tff"`` is the reference runtime the parity tests hold
        ``"tensorflow"`` to: both give the same History and, up to
        floating-point rounding, the same weights, and a checkpoint of one
        resumes on the other.
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
      upload_budget: Instead of δ, b in (0, 1): the cumulative upload is held at
        b times FedAvg's (an extension of this library, not the paper's
        method; see ``docs/howto/privacy-and-budget.md``). For ``"fedluar"``
        and the methods LUAR stacks on; giving δ too raises.
      inner_aggregator: A TFF aggregation factory that aggregates what
        clients send under LUAR (e.g.
        `tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(...)`,
        `tff.learning.robust_aggregator()`, `tff.learning.secure_aggregator()`),
        for ``"fedavg"``, ``"fedluar"``, ``"fedprox"`` and ``"fedopt"``. An
        unweighted one (the DP factories) needs ``client_weighting="uniform"``.
        Secure summation is simulated as TFF's test backend does it (TFF
        0.87's runtime cannot run it; ``docs/howto/privacy-and-budget.md``).
      **algorithm_options: The method's own options, e.g. ``proximal_strength``
        for FedProx; each method's `AlgorithmSpec` lists them with defaults
        (`keras_luar.algorithms.ALGORITHMS[name].options`, and
        ``docs/methods.md``), and an option the method does not take raises.

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
        batch_size: int | None = None,
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
        upload_budget: float | None = None,
        inner_aggregator: Any = None,
        **algorithm_options: Any,
    ):
        _check_model(model)
        self._layout = layers.describe_model(model)
        self.config: TrainerConfig = make_config(
            layout=self._layout,
            algorithm=algorithm,
            algorithm_options=algorithm_options,
            num_recycled_layers=num_recycled_layers,
            local_steps=local_steps,
            batch_size=batch_size,
            seed=seed,
            client_weighting=client_weighting,
            bn_statistics=bn_statistics,
            augmentation=augmentation,
            backend=backend,
            parallel_clients=parallel_clients,
            workers=workers,
            mixed_precision=mixed_precision,
            client_optimizer=client_optimizer,
            server_optimizer=server_optimizer,
            upload_budget=upload_budget,
            inner_aggregator=inner_aggregator,
        )
        self._loss_fn = loss_factory(loss)
        self._metrics = check_metrics(metrics)
        # The model is compiled with a Keras optimizer that carries the client learning
        # rate, so stock callbacks (LearningRateScheduler, ReduceLROnPlateau) can set it.
        optimizer = self.config.client_optimizer
        lr = optimizer_hparams(optimizer)
        model.compile(
            optimizer=tf.keras.optimizers.SGD(float(lr.get("learning_rate", 0.01))),
            loss=self._loss_fn(),
            metrics=list(self._metrics),  # Keras resolves them for `evaluate`, as in compile
        )
        self.model = model
        self._record = RunRecord({v.name: 0.0 for v in self._layout.trainable})

    # ---- what the trainer is -----------------------------------------------------------

    @property
    def layout(self) -> layers.ModelLayout:
        """The model's recycling candidates and always-sent variables."""
        return self._layout

    algorithm = property(lambda self: self.config.algorithm, doc="The method's name.")
    algorithm_options = property(lambda self: dict(self.config.options), doc="Its options.")
    num_recycled_layers = property(lambda self: self.config.num_recycled_layers, doc="δ.")
    local_steps = property(lambda self: self.config.local_steps, doc="τ.")
    batch_size = property(lambda self: self.config.batch, doc="B for unbatched data.")
    seed = property(lambda self: self.config.seed, doc="The run seed.")
    client_weighting = property(lambda self: self.config.client_weighting, doc="Client weighting.")
    bn_statistics = property(lambda self: self.config.bn_statistics, doc="BatchNorm rule.")
    augmentation = property(lambda self: self.config.augmentation, doc="The augmentation.")
    backend = property(lambda self: self.config.backend, doc="Where rounds run.")
    parallel_clients = property(lambda self: self.config.parallel_clients, doc="Clients at once.")
    workers = property(lambda self: self.config.workers, doc="Worker addresses, or None.")
    mixed_precision = property(lambda self: self.config.mixed_precision, doc="Dtype policy.")

    @property
    def aggregation_counts(self) -> dict[str, float]:
        """Per trainable variable: rounds in which its fresh aggregate was applied.

        Fractional for LBGM's per-client decisions; the paper's Figure 3.
        """
        return self._record.aggregation_counts

    @property
    def last_recycled_layers(self) -> list[str]:
        """Names recycled in the round that just ended (readable from callbacks)."""
        return self._record.last_recycled_layers

    @property
    def rounds_done(self) -> int:
        """Rounds completed by the last (or the running) `fit`."""
        return self._record.rounds_done

    def signature(self) -> ModelSignature:
        """What client and validation data must match (the model's inputs, output, loss)."""
        return ModelSignature(self.model, sparse_labels=is_sparse_loss(self._loss_fn()))

    def build_process(self, input_spec: Any) -> Any:
        """The method's TFF process for client batches of `input_spec` (``(x, y)`` specs)."""
        return build_process(
            self.config, self.model, self._layout,
            loss_factory=self._loss_fn, metrics=self._metrics, input_spec=input_spec,
        )  # fmt: skip

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
            (unbatched, or batched: see `keras_luar.training.client_data` for
            how batches are used over the rounds) or of ``(x, y)`` arrays, a
            `tff.simulation.datasets.ClientData`, a
            `keras_luar.data.FederatedData`, or ``(x, y, partitions)``. x may
            be a tuple (model input order) or a dict (input names) for a
            model with several inputs.
          rounds: Total number of rounds (like ``epochs``; a resumed run stops
            at the same total).
          clients_per_round: Clients sampled per round, seeded by (seed, round).
          validation_data: A dataset or ``(x, y)``, checked against the model
            before round 0 and evaluated after each round into ``val_``
            entries.
          callbacks: Keras callbacks; they see `trainer.model` with the global
            weights after every round. On resume, a `CSVLogger` keeps the rows
            of the rounds already done (its file is cut to them).
          verbose: 0 silent, 1 progress bar over rounds (and a line for each
            set-up step that takes more than a second), 2 one line per round.
          checkpoint_dir: If set, state is saved after every round and a later
            `fit` with the same directory resumes after the last saved round.
          validate_data: Read all client data once before the first round to
            check label values and finiteness (shapes and structure are
            checked either way).
          client_data_cache: How client data reaches each round.
            ``"tensors"`` (in process only) holds the population's examples
            once, one tensor per component, and draws every sampled client's
            batches inside TensorFlow, with no Python per client (see
            `keras_luar.training.indexed_data`). ``"memory"`` builds each
            sampled client's `tf.data` pipeline from its dataset every round.
            ``"files"`` writes each client once to a TFRecord file and reads it
            back: TFF's C++ runtime serializes a dataset, data included, on
            every call, and a dataset that reads a file carries only its name.
            ``"auto"`` picks ``"tensors"`` in process when every client is in
            memory as tensor slices (arrays, ``(x, y, partitions)``,
            `FederatedData`, untransformed `Dataset.from_tensor_slices`) of
            under 2 GiB in all; otherwise ``"files"`` on the ``"tff"`` backend
            when a client may hold more than 1 MB, else ``"memory"``. With
            ``workers``, ``"auto"`` is ``"memory"``: each call carries its
            client's data, so the workers need no access to this machine's
            files. Every mode gives the same batches in the same order.

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
          ValueError / TypeError: For bad client data, validation data or
            arguments, before any round.
          KeyboardInterrupt: On Ctrl-C, after one line saying which round
            completed and how to resume.
          keras_luar.backends.WorkersUnavailableError: With ``workers``, when
            no worker answers before the first round (the message names every
            address tried), or when every worker has failed mid-run and none
            answers again.
        """
        rounds = check_int("rounds", rounds, 1)
        clients = as_clients(client_data)
        clients_per_round = check_int("clients_per_round", clients_per_round, 1)
        if clients_per_round > len(clients.ids):
            raise invalid(
                "clients_per_round",
                f"at most the number of clients ({len(clients.ids)})",
                clients_per_round,
            )
        if verbose not in (0, 1, 2):
            raise invalid("verbose", "0, 1 or 2", verbose)
        check_choice("client_data_cache", client_data_cache, CACHE_MODES)
        signature = self.signature()
        with console.announce(f"Checking the data of {len(clients.ids)} clients", verbose):
            check_clients(clients, signature, scan=validate_data)
        if clients.batched and self.config.batch_size is not None:
            raise invalid(
                "batch_size",
                "None with pre-batched client data, which keeps its own batches",
                self.config.batch_size,
            )
        if clients.batched and self.config.augmentation is not None:
            raise ValueError(
                "Invalid value for argument `client_data`. `augmentation` works on single "
                "examples; pass unbatched client datasets. Received: batched datasets"
            )
        if validation_data is not None:
            validation_data = validation_dataset(validation_data, signature)
        workdir = tempfile.mkdtemp(prefix="keras_luar_clients_")
        try:
            mode = resolve_cache_mode(
                clients, client_data_cache, in_process=self.config.backend == "tensorflow",
                pooled=self.config.workers is not None,
            )  # fmt: skip
            if mode == "files":
                with console.announce("Writing client data to files", verbose):
                    clients = cache_clients(clients, directory=workdir)
            return self._run(
                clients, indexed=mode == "tensors", rounds=rounds, clients_per_round=clients_per_round,
                validation_data=validation_data, callbacks=callbacks, verbose=verbose,
                checkpoint_dir=checkpoint_dir,
            )  # fmt: skip
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _run(self, clients, *, indexed, rounds, clients_per_round, validation_data, callbacks, verbose,
             checkpoint_dir):  # fmt: skip
        config = self.config
        inputs = RoundInputs(
            clients, local_steps=config.local_steps, batch_size=config.batch, seed=config.seed,
            augmentation=config.augmentation, indexed=indexed,
        )  # fmt: skip
        context = None
        if config.workers is not None:
            context = backends.WorkerPoolContext(config.workers)
            context.connect()  # fails now, naming the addresses, when none answers
        elif config.backend == "tensorflow":
            context = backends.InProcessContext(parallel_clients=config.parallel_clients)
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = RoundCheckpoint(
                checkpoint_dir,
                run_fingerprint(self.config, self._layout, len(clients.ids), clients_per_round),
                [v.name for v in self._layout.trainable],
            )
        self._record = RunRecord({v.name: 0.0 for v in self._layout.trainable})
        try:
            with backends.execution(config.backend, context):
                with console.announce(
                    f"Building the TFF computations of {config.spec.title}", verbose
                ):
                    process = self.build_process(inputs.dataset(0, 0).element_spec)
                loop = RoundLoop(
                    process, inputs, model=self.model, layout=self._layout, seed=config.seed,
                    client_weighting=config.client_weighting, record=self._record,
                )  # fmt: skip
                return loop.run(
                    rounds=rounds, clients_per_round=clients_per_round,
                    validation_data=validation_data, callbacks=list(callbacks or []),
                    verbose=verbose, checkpoint=checkpoint,
                )  # fmt: skip
        finally:
            if config.workers is not None:
                context.close()

    def evaluate(self, data: Any, **kwargs: Any) -> Any:
        """Evaluates the global model like `model.evaluate`.

        Args:
          data: A `tf.data.Dataset` (unbatched ones are batched by 256) or ``(x, y)``.
          **kwargs: Passed to `model.evaluate` (e.g. ``return_dict=True``).

        Returns:
          What `model.evaluate` returns.
        """
        return self.model.evaluate(validation_dataset(data, self.signature()), **kwargs)


def _check_model(model: Any) -> None:
    if not isinstance(model, tf.keras.Model):
        raise invalid("model", "a tf.keras.Model", type(model).__name__, TypeError)
    if is_subclassed(model):
        raise TypeError(
            "Invalid value for argument `model`. TFF needs a model it can clone for the "
            "clients, which tf.keras.models.clone_model cannot do for subclassed models. "
            "Rebuild it as a Sequential or functional model (subclassed layers inside "
            f"are fine). Received: a subclassed {type(model).__name__}"
        )
    if not model.built:
        raise invalid(
            "model", "a built model (give it an Input or call it once)", "an unbuilt model"
        )
    if not model.trainable_variables:
        raise invalid(
            "model", "a model with trainable variables (there is nothing to train)",
            f"{model.name} with none",
        )  # fmt: skip
