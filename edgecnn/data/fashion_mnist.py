"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017, arXiv:1708.07747): finding, downloading, loading.

A recipe's ``data.path`` is used alone: the files must be there (a folder you name
that lacks them is an error, never silently replaced by another copy). Without it, the
search order is, first folder holding all four files wins:

1. ``$EDGECNN_DATA`` itself, then its ``fashion-mnist`` sub-folder;
2. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``);
3. the Keras download cache ``$KERAS_HOME/datasets/fashion-mnist`` (``~/.keras`` by default).

If none has them, the missing files are downloaded into the Keras cache from the URLs
Keras itself uses (or a mirror: ``$EDGECNN_DATA_URL``, ``edgecnn data download --url``),
verified by sha256 and written atomically. No TensorFlow here.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import zlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from edgecnn.data.idx import read_idx
from edgecnn.data.raw import RawDataset
from edgecnn.errors import DataError
from edgecnn.fileio import atomic_path

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
URL_ENV_VAR = "EDGECNN_DATA_URL"  # a mirror holding the four .gz files, used instead of BASE_URL
# sha256 of each file's decompressed IDX bytes, the content every copy shares. The .gz bytes
# are not pinned: the official archives (tensorflow/datasets url_checksums/fashion_mnist.txt,
# 26421880 bytes for the training images) and Debian's re-gzipped copies (26421856 bytes,
# another gzip header) hold the same images, and a mirror may compress them again.
# These are the hashes of Debian's files decompressed; other projects pin the same values
# as the raw hashes of the publisher's archives.
SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

ENV_VAR = "EDGECNN_DATA"
SUBDIR = "fashion-mnist"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_TIMEOUT_S = 15.0
HOW_TO_GET = "sudo apt-get install dataset-fashion-mnist, or set EDGECNN_DATA to a folder with the four .gz files"


def keras_cache_dir() -> Path:
    """The folder Keras downloads Fashion-MNIST into (honours ``KERAS_HOME`` like Keras)."""
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(home) / "datasets" / SUBDIR


def candidate_dirs(path: Optional[str | Path] = None) -> list[Path]:
    """The folders searched for the four files, in order (see the module docstring)."""
    dirs: list[Path] = []
    if path is not None:
        dirs.append(Path(path).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        dirs += [Path(env).expanduser(), Path(env).expanduser() / SUBDIR]
    dirs += [SYSTEM_DIR, keras_cache_dir()]
    return dirs


def find_files(folder: Path) -> Optional[dict[str, Path]]:
    """Map each name in :data:`FILES` to its file in ``folder``, or None if one is missing.

    An uncompressed copy (the name without ``.gz``) is accepted too, since some mirrors
    ship the IDX files already unpacked.
    """
    found = {}
    for name in FILES:
        for candidate in (folder / name, folder / name.removesuffix(".gz")):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            return None
    return found


def locate_fashion_mnist(
    path: Optional[str | Path] = None,
    *,
    download: bool = True,
    base_url: Optional[str] = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Find the folder holding the four Fashion-MNIST files, downloading them if needed.

    Args:
        path: the recipe's ``data.path`` (searched first), or None.
        download: when no folder has the files, try to download them into
            :func:`keras_cache_dir`.
        base_url: where to download from (None: :func:`download_url`).
        timeout: seconds to wait on each network operation.

    Returns:
        The first folder, in :func:`candidate_dirs` order, holding all four files.

    Raises:
        DataError: one line listing the folders searched, why the download failed, and
            how to install the dataset.
    """
    if path is not None:
        folder = Path(path).expanduser()
        if find_files(folder) is None:
            missing = [name for name in FILES if not (folder / name).is_file()
                       and not (folder / name.removesuffix(".gz")).is_file()]
            state = "does not exist" if not folder.exists() else f"lacks {', '.join(missing)}"
            raise DataError(f"data.path {folder}: {state}; point data.path at the folder holding the four "
                            "Fashion-MNIST IDX files, or remove data.path to use the installed copy")
        return folder
    dirs = candidate_dirs(None)
    for folder in dirs:
        if find_files(folder) is not None:
            return folder
    looked = "; ".join(_describe(folder) for folder in dirs)
    if not download:
        raise DataError(f"Fashion-MNIST not found (looked in {looked}); {HOW_TO_GET}")
    try:
        return download_fashion_mnist(keras_cache_dir(), base_url=base_url, timeout=timeout)
    except DataError as exc:
        raise DataError(f"Fashion-MNIST not found (looked in {looked}) and the download failed ({exc}); {HOW_TO_GET}") from None


def download_url() -> str:
    """The URL downloads come from: ``$EDGECNN_DATA_URL`` when set (a mirror), else :data:`BASE_URL`."""
    return os.environ.get(URL_ENV_VAR) or BASE_URL


def download_fashion_mnist(
    target_dir: str | Path,
    *,
    base_url: Optional[str] = None,
    expected_sha256: Optional[Mapping[str, str]] = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download the files of :data:`FILES` missing from ``target_dir``.

    Each file is streamed to a temporary name beside its target, hashed on the way, and
    renamed into place only when the sha256 of its decompressed content matches, so an
    interrupted or tampered download never leaves a file that a later search would accept.

    Args:
        target_dir: folder to fill (created if needed).
        base_url: http(s) URL the file names are appended to (None: :func:`download_url`).
        expected_sha256: file name -> sha256 hex digest of its decompressed content
            (None = :data:`SHA256`, the official images and labels).
        timeout: seconds to wait on each network operation.

    Returns:
        ``target_dir``, now holding all four files.

    Raises:
        DataError: one line naming the URL and the reason (network error, HTTP status,
            hash mismatch, unwritable folder).
    """
    target_dir = Path(target_dir).expanduser()
    base_url = base_url or download_url()
    if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
        raise DataError(f"{base_url}: download URL must be http(s); use a local folder via data.path instead")
    base = base_url if base_url.endswith("/") else base_url + "/"
    hashes = SHA256 if expected_sha256 is None else expected_sha256
    for name in FILES:
        target = target_dir / name
        if target.is_file():
            continue
        _download_one(base + name, target, hashes[name], timeout)
    return target_dir


def load_fashion_mnist(path: Optional[str | Path] = None) -> RawDataset:
    """Load Fashion-MNIST as uint8 (N, 28, 28, 1) images and int64 labels.

    Args:
        path: the recipe's ``data.path``, searched first (see :func:`locate_fashion_mnist`).

    Returns:
        A :class:`RawDataset` with 60000 training and 10000 test images.

    Raises:
        DataError: the files cannot be found, downloaded or read.
    """
    folder = locate_fashion_mnist(path)
    files = find_files(folder)
    if files is None:  # removed between locate and load
        raise DataError(f"{folder}: Fashion-MNIST files vanished while loading; run again")
    arrays = {name: read_idx(p) for name, p in files.items()}
    splits = []
    for images_name, labels_name in ((FILES[0], FILES[1]), (FILES[2], FILES[3])):
        images, labels = arrays[images_name], arrays[labels_name]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"{files[images_name]}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}; is this the right file?")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{files[labels_name]}: {labels.shape} labels for {len(images)} images in {files[images_name].name}; the files do not belong together, replace them")
        splits.append((images[..., np.newaxis], labels.astype(np.int64)))
    (x_train, y_train), (x_test, y_test) = splits
    return RawDataset(x_train, y_train, x_test, y_test, CLASS_NAMES, source=str(folder))


def _describe(folder: Path) -> str:
    if not folder.is_dir():
        return f"{folder} (no such folder)"
    missing = [n for n in FILES if not (folder / n).is_file() and not (folder / n.removesuffix(".gz")).is_file()]
    return f"{folder} (missing {', '.join(missing)})"


def _download_one(url: str, target: Path, sha256: str, timeout: float) -> None:
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
            got = _content_sha256(tmp, url)
            if got != sha256:
                # Raising inside atomic_path deletes the temporary file.
                raise DataError(f"{url}: sha256 mismatch of the decompressed file (got {got[:12]}..., expected {sha256[:12]}...); "
                                "the download is corrupt or not the official Fashion-MNIST file")
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DataError(f"{url}: {exc.reason} (offline?)") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise DataError(f"{url}: {type(exc).__name__} {exc} (offline or interrupted?)") from None
    except OSError as exc:
        raise DataError(f"{target}: cannot write the download ({exc.strerror or exc}); check permissions on {target.parent}") from None


def _content_sha256(path: Path, url: str) -> str:
    """sha256 of the gzip file's decompressed bytes, streamed (47 MB for the training images)."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{url}: not a complete gzip file ({exc}); the download is corrupt or the mirror serves another format") from None
    return digest.hexdigest()
