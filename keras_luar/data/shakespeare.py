"""Federated Shakespeare next-character prediction, one client per speaking role.

The data come from `tff.simulation.datasets.shakespeare.load_data`, which reads
one SQLite file, ``shakespeare.sqlite``, from its cache directory; here that
directory is `keras_luar.data.cache.data_root`. TFF derived the file from
LEAF's Shakespeare: a client is a role in a play (715 roles) and every example
is a snippet of contiguous lines the role speaks; each role's snippets are split
into a train and a test part.

Text is turned into training pairs as in TFF's Shakespeare baseline
(``tff.simulation.baselines.shakespeare``): every byte of a snippet is looked up
in `CHAR_VOCAB`, the snippet is wrapped in `BOS_ID` ... `EOS_ID`, padded with
`PAD_ID` to a multiple of ``sequence_length + 1`` and cut into pieces of that
length; x is the first `sequence_length` ids of a piece and y the last, i.e.
the next character at every position. Unlike TFF's pipeline, which shuffles
snippets before packing them, pieces are cut snippet by snippet in stored order,
so a client's data is fixed (the trainer shuffles them).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_federated as tff

from keras_luar.data.cache import data_root
from keras_luar.data.federated import FederatedData, _concatenate_pairs
from keras_luar.data.femnist import _draw, _load_tff_splits, _read_client, _tff_database
from keras_luar.data.partition import _check_bool, _check_int

SHAKESPEARE_URL = "https://storage.googleapis.com/tff-datasets-public/shakespeare.sqlite.lzma"

# The 86 characters of TFF's Shakespeare baseline, in its order (the order is
# arbitrary but fixes the ids, so models trained with TFF's pipeline read the
# same ids). Every character is ASCII, so one byte is one character.
CHAR_VOCAB = (
    "dhlptx@DHLPTX $(,048cgkoswCGKOSW[_#'/37;?bfjnrvzBFJNRVZ\"&*.26:\naeimquyAEIMQUY]!%)-159\r"
)
# Id 0 pads the last piece of a snippet; CHAR_VOCAB[i] is id i + 1; then come
# the id of any other byte and the snippet start and end markers.
PAD_ID = 0
OOV_ID = len(CHAR_VOCAB) + 1
BOS_ID = len(CHAR_VOCAB) + 2
EOS_ID = len(CHAR_VOCAB) + 3
VOCAB_SIZE = len(CHAR_VOCAB) + 4

_BYTE_IDS = np.full(256, OOV_ID, np.int32)
_BYTE_IDS[[ord(c) for c in CHAR_VOCAB]] = np.arange(1, len(CHAR_VOCAB) + 1)


def encode_snippet(
    snippet: bytes | str, sequence_length: int = 80
) -> tuple[np.ndarray, np.ndarray]:
    """Encodes one snippet into next-character input and target sequences.

    Args:
      snippet: The text; a str is encoded as UTF-8 first, and every byte
        outside `CHAR_VOCAB` becomes `OOV_ID`.
      sequence_length: Length L of each sequence, >= 1.

    Returns:
      ``(x, y)``, two int32 arrays of shape ``(n, L)`` where
      ``n = ceil((len(bytes) + 2) / (L + 1))``; ``y[:, t]`` is the id that
      follows ``x[:, t]``.

    Raises:
      ValueError: If `sequence_length` is invalid.

    Examples:
      >>> x, y = encode_snippet("Hi!", sequence_length=4)
      >>> x.tolist(), y.tolist()
      ([[88, 9, 66, 79]], [[9, 66, 79, 89]])
    """
    sequence_length = _check_int("sequence_length", sequence_length, 1)
    if isinstance(snippet, str):
        snippet = snippet.encode("utf-8")
    ids = _BYTE_IDS[np.frombuffer(snippet, np.uint8)]
    tokens = np.concatenate([[BOS_ID], ids, [EOS_ID]]).astype(np.int32)
    pad = -len(tokens) % (sequence_length + 1)
    pieces = np.pad(tokens, (0, pad), constant_values=PAD_ID).reshape(-1, sequence_length + 1)
    return pieces[:, :-1], pieces[:, 1:]


def _encode_role(snippets: np.ndarray, sequence_length: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [encode_snippet(s, sequence_length) for s in snippets]
    return _concatenate_pairs(pairs, _no_sequences(sequence_length))


def _no_sequences(sequence_length: int) -> tuple[np.ndarray, np.ndarray]:
    empty = np.zeros([0, sequence_length], np.int32)
    return empty, empty.copy()


def load_shakespeare_federated(
    num_clients: int | None = None,
    *,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    sequence_length: int = 80,
    min_size: int = 1,
) -> FederatedData:
    """Loads federated Shakespeare as next-character prediction, one client per role.

    Each role's train snippets are encoded with `encode_snippet`; roles with
    fewer than `min_size` sequences are dropped. With ``num_clients=None``
    every remaining role is a client; otherwise `num_clients` of them are drawn
    without replacement by `seed`. Clients are named by role id (e.g.
    ``"THE_TRAGEDY_OF_KING_LEAR_MACBETH"``) and sorted. The test set is the
    encoded test split of the same roles.

    x and y are int32 of shape ``(sequence_length,)``; `num_classes` is
    `VOCAB_SIZE` (90). Padding positions have target `PAD_ID`; TFF's baseline
    leaves them out of its accuracy, and a loss that should ignore them must
    mask id 0.

    Args:
      num_clients: Number of roles to draw, >= 1, or None for all of them.
      seed: Seed of the ``np.random.default_rng`` that draws the roles
        (unused when `num_clients` is None).
      data_dir: Cache directory; see `keras_luar.data.cache.data_root`.
      download: Whether to download ``shakespeare.sqlite`` (from
        `SHAKESPEARE_URL`) when it is not in the cache directory.
      sequence_length: Characters per example, >= 1 (80 in TFF and LEAF).
      min_size: Smallest number of training sequences a role needs to be a
        client, >= 1. Every role of the real data has at least one, so the
        default keeps all 715.

    Returns:
      A `FederatedData` whose clients are speaking roles.

    Raises:
      ValueError: If an argument is invalid, checked before any file is
        read, or if fewer roles than `num_clients` have `min_size` sequences.
      TypeError: If `data_dir` is not a path.
      MissingDataError: For a damaged ``shakespeare.sqlite``, or none in the
        cache directory and none downloaded.

    Examples:
      Without the file and with `download` off, it stops before reading anything:

      >>> load_shakespeare_federated(data_dir="/nonexistent/data", download=False)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      keras_luar.data.cache.MissingDataError: Shakespeare is not in the data cache and could not be downloaded (download=False)...

    References:
      Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018.
      McMahan et al., "Communication-Efficient Learning of Deep Networks from
      Decentralized Data", AISTATS 2017.
    """
    if num_clients is not None:
        num_clients = _check_int("num_clients", num_clients, 1)
    seed = _check_int("seed", seed, 0)
    sequence_length = _check_int("sequence_length", sequence_length, 1)
    min_size = _check_int("min_size", min_size, 1)
    download = _check_bool("download", download)
    root = data_root(data_dir)

    path = _tff_database("Shakespeare", SHAKESPEARE_URL, root, download=download)
    train, test = _load_tff_splits(
        "Shakespeare", path, tff.simulation.datasets.shakespeare.load_data
    )

    encoded = {
        role: _encode_role(_read_client(train, role)["snippets"], sequence_length)
        for role in sorted(train.client_ids)
    }
    roles = [role for role, (x, _) in encoded.items() if len(x) >= min_size]
    if num_clients is not None:
        available = f"roles with at least min_size={min_size} training sequences"
        roles = _draw(roles, num_clients, seed, available)

    test_roles = set(test.client_ids)
    test_parts = [
        _encode_role(_read_client(test, role)["snippets"], sequence_length)
        for role in roles
        if role in test_roles
    ]
    return FederatedData.from_client_arrays(
        {role: encoded[role] for role in roles},
        _concatenate_pairs(test_parts, _no_sequences(sequence_length)),
        VOCAB_SIZE,
        (sequence_length,),
    )
