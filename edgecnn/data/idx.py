"""Reading IDX files, the format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/).

Layout: two zero bytes, a dtype code, the number of dimensions ``ndim``, then ``ndim``
big-endian uint32 sizes, then the values in C order (big-endian when wider than a byte).
Files may be gzip-compressed; that is detected from the content, not the file name.
This module is pure numpy (no TensorFlow).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from edgecnn.errors import DataError

# dtype code -> numpy dtype of the stored (big-endian) values.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_FIX = "replace it with a fresh copy (sudo apt-get install --reinstall dataset-fashion-mnist, or delete it and download again)"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a numpy array.

    Args:
        path: the ``.gz`` or uncompressed IDX file.

    Returns:
        An array of the file's shape in native byte order (uint8 for image/label files).
        The array owns its memory and is writable.

    Raises:
        DataError: one line naming the file and the fix when it is missing, not gzip or
            IDX as expected, or shorter/longer than its header says.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header; {_FIX}")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (magic bytes {data[:4].hex()}, expected 0000 + dtype code + ndim); {_FIX}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{path}: truncated IDX header ({len(data)} of {header_len} bytes); {_FIX}")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    got = len(data) - header_len
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise DataError(f"{path}: IDX payload {what} ({got} bytes, header {'x'.join(map(str, dims))} needs {expected}); {_FIX}")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header_len).reshape(dims)
    # frombuffer over immutable bytes is read-only; the copy also converts big-endian
    # values to native order so downstream arithmetic needs no byte swapping.
    return array.astype(dtype.newbyteorder("="), copy=True)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it starts with the gzip magic."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check the dataset folder (see data.path / EDGECNN_DATA)") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file; point data.path at the folder that contains it") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc}); check permissions") from None
    if not raw.startswith(_GZIP_MAGIC):
        if path.suffix == ".gz":
            raise DataError(f"{path}: named .gz but not gzip data (starts with {raw[:4].hex() or 'nothing'}); {_FIX}")
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: truncated gzip stream (incomplete download?); {_FIX}") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip data ({exc}); {_FIX}") from None
