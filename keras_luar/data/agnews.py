"""AG News topic classification, split across clients by a Dirichlet draw over labels.

The data are the two CSV files of Zhang, Zhao and LeCun (2015),
``ag_news_csv/train.csv`` (120,000 rows) and ``ag_news_csv/test.csv`` (7,600
rows), read from the cache directory `keras_luar.data.cache.data_root`. Each
row has three quoted fields and no header: the class index 1-4 (World, Sports,
Business, Sci/Tech), the title and the description; line breaks inside a
description are stored as the two characters backslash and ``n``.

Text is tokenized here, without any pretrained tokenizer: the text of a row is
``title + " " + description``, lower-cased, and its tokens are the runs of
letters and digits (`tokenize`). The vocabulary is built from the training
split only (`build_vocabulary`): id 0 pads, id 1 stands for every word out of
the vocabulary, and ids 2, 3, ... are the most frequent training words.

The official FedLUAR code differs in two ways, both on purpose:

* it tokenizes with the pretrained DistilBERT WordPiece tokenizer (30,522
  sub-word ids with ``[CLS]``/``[SEP]`` markers and an attention mask), which
  would need a download from a model hub; the word vocabulary here needs
  nothing but the training CSV, and a model can rebuild the attention mask as
  ``x != 0``;
* it reads TFDS's ``ag_news_subset`` with ``as_supervised=True``, which gives
  the description alone; here the title is kept in front of it, as in Zhang et
  al.'s experiments, since the title is the densest summary of the topic.
"""

from __future__ import annotations

import collections
import csv
import os
import pathlib
import re
from collections.abc import Iterable, Sequence

import numpy as np

from keras_luar.data.cache import DataFiles, damaged_file_error, data_root, download_file
from keras_luar.data.federated import FederatedData
from keras_luar.data.partition import _check_alpha, _check_bool, _check_int, partition_dirichlet

AGNEWS_DIR = "ag_news_csv"
AGNEWS_FILES = ("train.csv", "test.csv")
# A public copy of the original CSVs, byte for byte as Zhang et al. released them.
AGNEWS_BASE_URL = (
    "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv"
)
AGNEWS_URLS = {name: f"{AGNEWS_BASE_URL}/{name}" for name in AGNEWS_FILES}
CLASS_NAMES = ("World", "Sports", "Business", "Sci/Tech")
DOWNLOAD_TIMEOUT_S = 10.0

PAD_ID = 0
OOV_ID = 1
PAD_TOKEN = ""
OOV_TOKEN = "[UNK]"

# Letters and digits of any script; "_" is a word character for `re` but not
# a letter, so it separates tokens like every other symbol.
_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Splits one text into lower-case tokens: the runs of letters and digits.

    Every other character (space, punctuation, the backslash of an escaped
    line break) separates tokens, so ``"Wall St."`` and ``"wall-st"`` give the
    same tokens.

    Args:
      text: The text.

    Returns:
      The tokens, in order.

    Examples:
      >>> tokenize("Oil's price (Reuters)\\\\nRises 3.5%")
      ['oil', 's', 'price', 'reuters', 'rises', '3', '5']
    """
    # A literal "\n" would otherwise leave an "n" glued to the next word.
    return _TOKEN.findall(text.replace("\\n", " ").lower())


def build_vocabulary(texts: Iterable[str], size: int) -> list[str]:
    """Builds a word vocabulary from the most frequent tokens of `texts`.

    Ties in frequency are broken alphabetically, so the result depends on the
    multiset of texts only, not on their order.

    Args:
      texts: The texts to count tokens in (the training split).
      size: Number of entries, >= 3, including the padding and
        out-of-vocabulary entries; fewer when the texts have fewer words.

    Returns:
      The vocabulary as a list: entry 0 is ``""`` (padding), entry 1 is
      ``"[UNK]"`` (out of vocabulary), then up to ``size - 2`` tokens by
      decreasing count. A token's id is its index in this list.

    Raises:
      ValueError: If `size` is invalid.

    Examples:
      >>> build_vocabulary(["b a c", "a b", "a"], size=4)
      ['', '[UNK]', 'a', 'b']
    """
    size = _check_int("size", size, 3)
    counts = collections.Counter(token for text in texts for token in tokenize(text))
    words = sorted(counts, key=lambda token: (-counts[token], token))[: size - 2]
    return [PAD_TOKEN, OOV_TOKEN, *words]


def encode(texts: Sequence[str], vocabulary: Sequence[str], length: int) -> np.ndarray:
    """Turns texts into fixed-length rows of token ids.

    Args:
      texts: The texts.
      vocabulary: A vocabulary from `build_vocabulary`.
      length: Ids per row, >= 1. Longer texts keep their first `length`
        tokens; shorter ones are padded with `PAD_ID` at the end.

    Returns:
      An int32 array of shape ``(len(texts), length)``; a token not in
      `vocabulary` gets `OOV_ID`.

    Raises:
      ValueError: If `length` is invalid.

    Examples:
      >>> vocabulary = build_vocabulary(["b a c", "a b", "a"], size=4)
      >>> encode(["A c b a a", "b"], vocabulary, length=4).tolist()
      [[2, 1, 3, 2], [3, 0, 0, 0]]
    """
    length = _check_int("length", length, 1)
    # Entries 0 and 1 are markers, not words; a text can never produce them.
    ids = {token: i for i, token in enumerate(vocabulary) if i >= 2}
    rows = np.full([len(texts), length], PAD_ID, np.int32)
    for row, text in zip(rows, texts, strict=True):
        tokens = tokenize(text)[:length]
        row[: len(tokens)] = [ids.get(token, OOV_ID) for token in tokens]
    return rows


def read_agnews_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Reads one AG News CSV file.

    Args:
      path: A file in the original format (see the module docstring).

    Returns:
      ``(texts, labels)``: ``title + " " + description`` per row, and the
      int32 labels 0-3 (the file's class index minus 1), in file order.

    Raises:
      MissingDataError: If a row does not have three fields or its class
        index is not 1-4 (a damaged or foreign file).

    Examples:
      >>> import pathlib, tempfile
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     path = pathlib.Path(folder) / "train.csv"
      ...     _ = path.write_text('"3","Oil up","Prices rose, again."\\n')
      ...     print(read_agnews_csv(path))
      (['Oil up Prices rose, again.'], array([2], dtype=int32))
    """
    path = pathlib.Path(path)
    texts, labels = [], []
    # A stray byte that is not UTF-8 should cost one character, not the whole file.
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        for row in csv.reader(f):
            if len(row) != 3 or row[0] not in ("1", "2", "3", "4"):
                raise damaged_file_error(
                    "AG News",
                    path,
                    f"{path.name} line {len(labels) + 1} is not "
                    f'"class index 1-4","title","description": {row!r:.200}',
                    "Delete the file and load again, or put the original file there.",
                )
            labels.append(int(row[0]) - 1)
            texts.append(f"{row[1]} {row[2]}")
    return texts, np.asarray(labels, np.int32)


def _download(url: str, path: pathlib.Path) -> None:
    """Downloads `url` to `path` (see `download_file`)."""
    download_file(url, path, timeout=DOWNLOAD_TIMEOUT_S)


def _agnews_files(root: pathlib.Path, *, download: bool) -> dict[str, pathlib.Path]:
    """Returns the paths of the two CSV files in `root`, downloading missing ones if allowed."""
    directory = root / AGNEWS_DIR
    curls = "; ".join(f"curl -fL -o {directory / n} {AGNEWS_URLS[n]}" for n in AGNEWS_FILES)
    files = DataFiles(
        "AG News",
        root,
        [f"{AGNEWS_DIR}/{name}" for name in AGNEWS_FILES],
        f"Download {' and '.join(AGNEWS_URLS.values())} (e.g. `mkdir -p {directory}; {curls}`), "
        "or extract train.csv and test.csv from the ag_news_csv archive of Zhang et al.'s "
        "text classification data sets (e.g. https://s3.amazonaws.com/fast-ai-nlp/"
        "ag_news_csv.tgz), or call this loader with download=True where the network is "
        "reachable.",
    )
    paths = {name: directory / name for name in AGNEWS_FILES}
    for name, path in paths.items():
        if not path.is_file():
            url = AGNEWS_URLS[name]
            # `fetch` calls the lambda at once, so it sees this iteration's names.
            files.fetch(url, lambda: _download(url, path), download=download)  # noqa: B023
    return paths


def load_agnews_vocabulary(
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    vocabulary_size: int = 20000,
) -> list[str]:
    """Returns the vocabulary `load_agnews_federated` encodes with, e.g. to decode ids.

    Args:
      data_dir: Cache directory; see `keras_luar.data.cache.data_root`.
      download: Whether to download missing CSV files (see
        `load_agnews_federated`).
      vocabulary_size: As in `load_agnews_federated`.

    Returns:
      ``build_vocabulary(training texts, vocabulary_size)``.

    Raises:
      ValueError: If an argument is invalid, checked before any file is read.
      TypeError: If `data_dir` is not a path.
      MissingDataError: If the CSV files are neither in the cache directory
        nor downloadable, or are damaged.

    Examples:
      >>> import pathlib, tempfile
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     csv_dir = pathlib.Path(folder) / "ag_news_csv"
      ...     csv_dir.mkdir()
      ...     for name in ("train.csv", "test.csv"):
      ...         _ = (csv_dir / name).write_text('"3","Oil up","Prices rose."\\n')
      ...     print(load_agnews_vocabulary(data_dir=folder, download=False, vocabulary_size=5))
      ['', '[UNK]', 'oil', 'prices', 'rose']
    """
    vocabulary_size = _check_int("vocabulary_size", vocabulary_size, 3)
    download = _check_bool("download", download)
    paths = _agnews_files(data_root(data_dir), download=download)
    texts, _ = read_agnews_csv(paths["train.csv"])
    return build_vocabulary(texts, vocabulary_size)


def load_agnews_federated(
    num_clients: int = 128,
    alpha: float = 0.5,
    seed: int = 0,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    sequence_length: int = 128,
    vocabulary_size: int = 20000,
    min_size: int = 10,
) -> FederatedData:
    """Loads AG News as token ids and splits the training rows across clients.

    The training rows are partitioned with `partition_dirichlet` (the FedLUAR
    paper uses ``alpha=0.5`` and 128 clients); the test CSV is the test set.
    Both are encoded with the vocabulary of the training split (see the module
    docstring), so a word seen only in the test split is out of vocabulary.

    x is int32 of shape ``(sequence_length,)`` (0 pads, 1 is out of
    vocabulary, see `load_agnews_vocabulary` for the words); y is the int32
    class in 0-3 (`CLASS_NAMES`).

    Args:
      num_clients: Number of clients, >= 1.
      alpha: Dirichlet concentration of the label split, > 0.
      seed: Seed of the partition.
      data_dir: Cache directory; see `keras_luar.data.cache.data_root`. The
        files are ``<data_dir>/ag_news_csv/train.csv`` and ``test.csv``.
      download: Whether to download missing CSV files (from `AGNEWS_URLS`,
        with a `DOWNLOAD_TIMEOUT_S` timeout).
      sequence_length: Token ids per example, >= 1 (128 in the official code).
      vocabulary_size: Vocabulary entries including padding and
        out-of-vocabulary, >= 3.
      min_size: Smallest number of training rows per client, >= 0.

    Returns:
      A `FederatedData` with clients ``"client_000"``, ... and 4 classes.

    Raises:
      ValueError: If an argument is invalid, checked before any file is
        read, or if the partition fails (see `partition_dirichlet`).
      TypeError: If `data_dir` is not a path.
      MissingDataError: If the CSV files are neither in the cache directory
        nor downloadable, or are damaged.

    Examples:
      >>> from keras_luar.data.cache import MissingDataError
      >>> try:
      ...     load_agnews_federated(4, data_dir="/nonexistent/data", download=False)
      ... except MissingDataError as err:
      ...     print(str(err).split(". Expected")[0])
      AG News is not in the data cache and could not be downloaded (download=False)

    References:
      Zhang, Zhao and LeCun, "Character-level Convolutional Networks for Text
      Classification", NeurIPS 2015.
      Kim, Kang and Lee, "Layer-wise Update Aggregation with Recycling for
      Communication-Efficient Federated Learning" (FedLUAR), 2025.
    """
    num_clients = _check_int("num_clients", num_clients, 1)
    alpha = _check_alpha(alpha)
    seed = _check_int("seed", seed, 0)
    download = _check_bool("download", download)
    sequence_length = _check_int("sequence_length", sequence_length, 1)
    vocabulary_size = _check_int("vocabulary_size", vocabulary_size, 3)
    min_size = _check_int("min_size", min_size, 0)
    root = data_root(data_dir)

    paths = _agnews_files(root, download=download)
    train_texts, y_train = read_agnews_csv(paths["train.csv"])
    test_texts, y_test = read_agnews_csv(paths["test.csv"])
    vocabulary = build_vocabulary(train_texts, vocabulary_size)
    x_train = encode(train_texts, vocabulary, sequence_length)
    x_test = encode(test_texts, vocabulary, sequence_length)

    parts = partition_dirichlet(x_train, y_train, num_clients, alpha, min_size=min_size, seed=seed)
    return FederatedData.from_partition(
        x_train, y_train, parts, (x_test, y_test), len(CLASS_NAMES), (sequence_length,)
    )
