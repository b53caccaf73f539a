"""Where the benchmark data sets live on disk, and the error when they are not there.

Every loader of `keras_luar.data` reads its data set from one cache directory:
the loader's ``data_dir`` argument if given, else the ``KERAS_LUAR_DATA``
environment variable, else ``~/.keras_luar/data``. A loader that finds neither
its files there nor a way to download them fails at once with
`MissingDataError`, which names the files expected, where to put them and how to
get them.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

ENV_VAR = "KERAS_LUAR_DATA"
DEFAULT_DIR = pathlib.Path("~/.keras_luar/data")


class MissingDataError(FileNotFoundError):
    """A data set is neither in the cache directory nor downloadable from here."""


def data_root(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The cache directory: `data_dir`, else ``$KERAS_LUAR_DATA``, else ``~/.keras_luar/data``.

    Args:
      data_dir: An explicit directory, or None.

    Returns:
      The directory as an absolute `pathlib.Path` (it need not exist).

    Raises:
      TypeError: If `data_dir` is neither None nor a path.

    Examples:
      >>> str(data_root("/tmp/my_data"))
      '/tmp/my_data'
    """
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR) or DEFAULT_DIR
    if not isinstance(data_dir, str | os.PathLike):
        raise TypeError(
            "Invalid value for argument `data_dir`. Expected a path or None. "
            f"Received: data_dir of type {type(data_dir).__name__}"
        )
    return pathlib.Path(data_dir).expanduser().absolute()


def missing_data_error(
    dataset: str,
    directory: pathlib.Path,
    expected: Sequence[str],
    how_to_get: str,
    reason: str | None = None,
) -> MissingDataError:
    """Builds the error a loader raises when its files are missing.

    Args:
      dataset: The data set's name, e.g. ``"CIFAR-10"``.
      directory: The cache directory that was searched.
      expected: The paths, relative to `directory`, the loader needs.
      how_to_get: One or more sentences (URLs, commands) on obtaining the files.
      reason: Why downloading did not work, if it was tried.

    Returns:
      A `MissingDataError` to raise.

    Examples:
      >>> err = missing_data_error("Toy", pathlib.Path("/data"), ["toy/a.bin"], "Copy it.")
      >>> print(err)  # doctest: +NORMALIZE_WHITESPACE
      Toy is not in the data cache and could not be downloaded. Expected: /data/toy/a.bin.
      Put the files there (the directory is the `data_dir` argument, else $KERAS_LUAR_DATA,
      else ~/.keras_luar/data). Copy it.
    """
    files = ", ".join(str(directory / name) for name in expected)
    message = f"{dataset} is not in the data cache and could not be downloaded"
    if reason:
        message += f" ({reason})"
    return MissingDataError(
        f"{message}. Expected: {files}. Put the files there (the directory is the "
        f"`data_dir` argument, else ${ENV_VAR}, else {DEFAULT_DIR}). {how_to_get}"
    )
