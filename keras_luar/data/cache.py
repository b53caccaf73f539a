"""Where the benchmark data sets live on disk, and the error when they are not there.

Every loader of `keras_luar.data` reads its data set from one cache directory:
the loader's ``data_dir`` argument if given, else the ``KERAS_LUAR_DATA``
environment variable, else ``~/.keras_luar/data``. A loader that finds neither
its files there nor a way to download them fails at once with
`MissingDataError`, which names the files expected, where to put them and how to
get them.

`DataFiles` and `download_file` are what the loaders share: finding their files
here, downloading what is missing (never leaving a partial file under the final
name) and turning any failure into that error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import tempfile
import urllib.request
from collections.abc import Callable, Sequence

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


def damaged_file_error(
    dataset: str,
    path: pathlib.Path,
    reason: str,
    how_to_fix: str,
    *,
    root: pathlib.Path | None = None,
) -> MissingDataError:
    """Builds the error a loader raises when a file is there but cannot be read.

    Args:
      dataset: The data set's name, e.g. ``"CIFAR-10"``.
      path: The damaged file.
      reason: What is wrong with it.
      how_to_fix: One or more sentences on replacing it.
      root: The directory the message names (default: the file's own); the
        file is named relative to it.

    Returns:
      A `MissingDataError` to raise.

    Examples:
      >>> path = pathlib.Path("/data/toy/a.bin")
      >>> err = damaged_file_error("Toy", path, "a.bin is empty", "Delete it.")
      >>> print(str(err).split(". Expected")[0])
      Toy is not in the data cache and could not be downloaded (a.bin is empty)
    """
    root = path.parent if root is None else root
    return missing_data_error(
        dataset, root, [path.relative_to(root).as_posix()], how_to_fix, reason
    )


@dataclasses.dataclass(frozen=True)
class DataFiles:
    """The files a loader needs in the cache directory, and how to get them.

    Attributes:
      dataset: The data set's name, e.g. ``"CIFAR-10"``.
      root: The cache directory (see `data_root`).
      expected: The paths, relative to `root`, the loader needs.
      how_to_get: One or more sentences (URLs, commands) on obtaining the files,
        ending the error's message.

    Examples:
      >>> files = DataFiles("Toy", pathlib.Path("/nonexistent"), ("toy/a.bin",), "Copy it.")
      >>> files.present()
      False
      >>> try:
      ...     files.fetch("https://example.invalid/a.bin", lambda: None, download=False)
      ... except MissingDataError as err:
      ...     print(str(err).split(". Expected")[0])
      Toy is not in the data cache and could not be downloaded (download=False)
    """

    dataset: str
    root: pathlib.Path
    expected: Sequence[str]
    how_to_get: str

    def present(self) -> bool:
        """Whether every expected file is in the cache directory."""
        return all((self.root / name).is_file() for name in self.expected)

    def missing(self, reason: str | None = None) -> MissingDataError:
        """The error naming the expected files and how to get them (see `missing_data_error`)."""
        return missing_data_error(self.dataset, self.root, self.expected, self.how_to_get, reason)

    def fetch(self, url: str, get: Callable[[], object], *, download: bool) -> None:
        """Calls `get`, which downloads `url`, if downloading is allowed.

        Args:
          url: What `get` downloads, for the message.
          get: Downloads `url` into the cache directory.
          download: The loader's ``download`` argument.

        Raises:
          MissingDataError: If `download` is False, or `get` raised (whatever
            went wrong, the data is not there); the message gives the reason.
        """
        if not download:
            raise self.missing("download=False")
        try:
            get()
        except Exception as exc:
            raise self.missing(f"downloading {url} failed: {type(exc).__name__}: {exc}") from exc


def download_file(url: str, path: pathlib.Path, md5: str | None = None, *, timeout: float) -> None:
    """Downloads `url` to `path`; a partial download never takes the final name.

    The data go to a scratch file next to `path`, which is renamed to `path`
    once complete (and checked), and removed otherwise.

    Args:
      url: The source (``https://``, or ``file://`` in tests).
      path: Where the file goes; its directory is created if needed.
      md5: The file's expected MD5 hex digest, or None not to check it.
      timeout: Seconds that every connect and read may take, so that an
        offline machine fails in seconds instead of hanging.

    Raises:
      OSError: If the file has another MD5; the download's own errors
        (`urllib.error.URLError`, `TimeoutError`, ...) pass through.

    Examples:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     source = pathlib.Path(folder) / "source.txt"
      ...     _ = source.write_text("data")
      ...     download_file(source.as_uri(), pathlib.Path(folder) / "copy.txt", timeout=1.0)
      ...     print((pathlib.Path(folder) / "copy.txt").read_text())
      data
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=".download-", dir=path.parent)
    try:
        digest = hashlib.md5()
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=timeout) as response,
        ):
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if md5 is not None and digest.hexdigest() != md5:
            raise OSError(f"the file has MD5 {digest.hexdigest()}, expected {md5}")
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)
