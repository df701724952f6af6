"""Tests of edgecnn.data: IDX reading, Fashion-MNIST search/download, image folders, splits, pipelines."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgecnn.data import fashion_mnist
from edgecnn.data.dataset import (
    Dataset,
    dataset_fingerprint,
    load_dataset,
    make_tf_dataset,
    representative_images,
    stratified_split,
    stratified_subset,
)
from edgecnn.data.idx import read_idx
from edgecnn.data.image_folder import load_image_folder
from edgecnn.data.preprocess import NormalizationSpec, make_augmenter, to_model_input
from edgecnn.errors import DataError
from edgecnn.recipe import Augment, DataConfig, Normalization

REPO = Path(__file__).resolve().parents[1]

def _installed_fashion_mnist() -> Path:
    """Where the README's set-up put the real files: the Debian package's folder, or the
    download into the Keras cache (the route without apt)."""
    for folder in (fashion_mnist.SYSTEM_DIR, fashion_mnist.keras_cache_dir()):
        if fashion_mnist.find_files(folder) is not None:
            return folder
    return fashion_mnist.SYSTEM_DIR


SYSTEM_FMNIST = _installed_fashion_mnist()  # (the name predates the download route)
needs_fmnist = pytest.mark.skipif(
    fashion_mnist.find_files(SYSTEM_FMNIST) is None,
    reason="Fashion-MNIST not installed (bash tools/dev.sh setup: apt-get install dataset-fashion-mnist, "
           "or edgecnn data download fashion_mnist)",
)


# --------------------------------------------------------------------------- helpers


def assert_data_error(exc_info, *fragments: str) -> None:
    """The one shared check of our error contract: a DataError, one line, naming what it must."""
    message = str(exc_info.value)
    assert exc_info.type is DataError
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    big = array.astype(array.dtype.newbyteorder(">"))
    header = struct.pack(">HBB", 0, codes[big.dtype], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big.tobytes()


def write_tiny_fmnist(folder: Path, n_train: int = 40, n_test: int = 20) -> Path:
    """Four small but valid Fashion-MNIST-named IDX .gz files (labels cycle 0..9)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        fashion_mnist.FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        fashion_mnist.FILES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        fashion_mnist.FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        fashion_mnist.FILES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        (folder / name).write_bytes(gzip.compress(idx_bytes(array), mtime=0))
    return folder


def png_bytes(pixels: np.ndarray) -> bytes:
    """A minimal 8-bit PNG (gray, RGB or RGBA) written by hand, so no encoder is needed."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, {1: 0, 3: 2, 4: 6}[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def write_class_images(folder: Path, classes: dict[str, int], size: int = 12, step: int = 20) -> None:
    """``classes`` name -> count; image i of class k is a flat gray/RGB/RGBA PNG of value step*k + i."""
    for k, (name, count) in enumerate(classes.items()):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            value = step * k + i
            shape = [(size, size), (size, size, 3), (size, size + 4, 4)][i % 3]
            (folder / name / f"img{i}.png").write_bytes(png_bytes(np.full(shape, value, dtype=np.uint8)))


@pytest.fixture
def isolated_search(tmp_path, monkeypatch):
    """No EDGECNN_DATA, an empty system dir and an empty Keras cache under tmp_path."""
    monkeypatch.delenv("EDGECNN_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "system")
    return tmp_path


# --------------------------------------------------------------------------- IDX


def test_read_idx_raw_and_gzip_round_trip(tmp_path):
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(array)))
    for name in ("a.idx", "a.idx.gz"):
        got = read_idx(tmp_path / name)
        np.testing.assert_array_equal(got, array)
        assert got.dtype == np.int32 and got.dtype.isnative and got.flags.writeable


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (lambda good: good[: len(good) // 2], "truncated gzip"),
        (lambda good: b"this is not gzip", "not gzip"),
        (lambda good: gzip.compress(b"\x12\x34\x08\x01" + b"\x00" * 8), "not an IDX file"),
        (lambda good: gzip.compress(gzip.decompress(good)[:-10]), "payload truncated"),
        (lambda good: gzip.compress(gzip.decompress(good) + b"extra"), "trailing bytes"),
        (lambda good: good[:-8] + b"\x00" * 8, "corrupt gzip"),
    ],
    ids=["truncated-gz", "not-gz", "wrong-magic", "short-payload", "long-payload", "bad-crc"],
)
def test_read_idx_corruption_is_one_line_naming_the_file(tmp_path, payload, fragment):
    good = gzip.compress(idx_bytes(np.zeros((100, 28, 28), np.uint8)))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(payload(good))
    with pytest.raises(DataError) as exc_info:
        read_idx(path)
    assert_data_error(exc_info, str(path), fragment, "fresh copy")


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError) as exc_info:
        read_idx(tmp_path / "nope.gz")
    assert_data_error(exc_info, str(tmp_path / "nope.gz"), "not found")


# --------------------------------------------------------------------------- Fashion-MNIST


@needs_fmnist
def test_real_fashion_mnist_loads(isolated_search, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", SYSTEM_FMNIST)
    raw = fashion_mnist.load_fashion_mnist()
    assert raw.x_train.shape == (60000, 28, 28, 1) and raw.x_test.shape == (10000, 28, 28, 1)
    assert raw.x_train.dtype == np.uint8 and raw.y_train.dtype == np.int64
    assert raw.class_names == fashion_mnist.CLASS_NAMES and len(raw.class_names) == 10
    np.testing.assert_array_equal(np.bincount(raw.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(raw.y_test), [1000] * 10)
    # First training label of Fashion-MNIST is "Ankle boot"; images use the full range.
    assert raw.y_train[0] == 9 and raw.x_train.max() == 255 and raw.x_train.min() == 0


def test_locate_order_recipe_path_then_env_then_system_then_cache(isolated_search, monkeypatch):
    tmp = isolated_search
    recipe_dir = write_tiny_fmnist(tmp / "recipe")
    env_dir = write_tiny_fmnist(tmp / "env")
    system_dir = write_tiny_fmnist(tmp / "system")
    cache_dir = write_tiny_fmnist(fashion_mnist.keras_cache_dir())
    monkeypatch.setenv("EDGECNN_DATA", str(env_dir))

    assert fashion_mnist.locate_fashion_mnist(recipe_dir, download=False) == recipe_dir
    assert fashion_mnist.locate_fashion_mnist(None, download=False) == env_dir
    # A recipe path without the files is an error naming it, never silently another copy.
    (tmp / "empty").mkdir()
    with pytest.raises(DataError, match=r"data.path .*empty: lacks train-images"):
        fashion_mnist.locate_fashion_mnist(tmp / "empty", download=True)
    with pytest.raises(DataError, match=r"data.path .*nowhere: does not exist"):
        fashion_mnist.locate_fashion_mnist(tmp / "nowhere", download=False)
    monkeypatch.delenv("EDGECNN_DATA")
    assert fashion_mnist.locate_fashion_mnist(None, download=False) == system_dir
    shutil.rmtree(system_dir)
    assert fashion_mnist.locate_fashion_mnist(None, download=False) == cache_dir


def test_locate_env_subfolder_and_symlinks(isolated_search, monkeypatch):
    tmp = isolated_search
    real = write_tiny_fmnist(tmp / "real")
    linked = tmp / "datasets" / "fashion-mnist"
    linked.mkdir(parents=True)
    for name in fashion_mnist.FILES:
        (linked / name).symlink_to(real / name)
    monkeypatch.setenv("EDGECNN_DATA", str(tmp / "datasets"))
    assert fashion_mnist.locate_fashion_mnist(None, download=False) == linked
    raw = fashion_mnist.load_fashion_mnist(None)
    assert raw.x_train.shape == (40, 28, 28, 1) and raw.source == str(linked)


def test_locate_accepts_uncompressed_copies(isolated_search):
    folder = write_tiny_fmnist(isolated_search / "plain")
    for name in fashion_mnist.FILES:
        (folder / name).rename(folder / name.removesuffix(".gz"))
        (folder / name.removesuffix(".gz")).write_bytes(gzip.decompress((folder / name.removesuffix(".gz")).read_bytes()))
    raw = fashion_mnist.load_fashion_mnist(folder)
    assert raw.x_test.shape == (20, 28, 28, 1)


def test_locate_not_found_says_where_and_how(isolated_search):
    with pytest.raises(DataError) as exc_info:
        fashion_mnist.locate_fashion_mnist(None, download=False)
    assert_data_error(
        exc_info, str(isolated_search / "system"),
        str(fashion_mnist.keras_cache_dir()), "sudo apt-get install dataset-fashion-mnist", "EDGECNN_DATA",
    )


def test_locate_download_failure_is_reported(isolated_search, http_dir):
    base = http_dir(isolated_search / "nothing-here")  # every file answers 404
    with pytest.raises(DataError) as exc_info:
        fashion_mnist.locate_fashion_mnist(None, base_url=base, timeout=5)
    assert_data_error(exc_info, "download failed", "HTTP 404", base + fashion_mnist.FILES[0], "dataset-fashion-mnist")
    assert not any(fashion_mnist.keras_cache_dir().glob("*")), "nothing may be left behind"


@needs_fmnist
def test_download_from_local_server_verifies_sha256(isolated_search, http_dir, monkeypatch):
    """The pinned hashes are of the decompressed files, so the Debian package's re-gzipped
    copy, served as a mirror, passes the same check as Google's archives."""
    base = http_dir(SYSTEM_FMNIST)
    target = isolated_search / "dl"
    assert fashion_mnist.download_fashion_mnist(target, base_url=base, timeout=10) == target
    for name in fashion_mnist.FILES:
        assert (target / name).read_bytes() == (SYSTEM_FMNIST / name).read_bytes()
    assert not list(target.glob(".tmp-*"))

    # The same path as a user without the files gets: locate falls back to the download,
    # from the mirror named by $EDGECNN_DATA_URL.
    monkeypatch.setenv(fashion_mnist.URL_ENV_VAR, base)
    assert fashion_mnist.locate_fashion_mnist(None) == fashion_mnist.keras_cache_dir()
    assert fashion_mnist.load_fashion_mnist().x_train.shape == (60000, 28, 28, 1)


def test_download_hash_mismatch_leaves_nothing(isolated_search, http_dir):
    served = write_tiny_fmnist(isolated_search / "served")
    target = isolated_search / "dl"
    with pytest.raises(DataError) as exc_info:
        # Default hashes are the official files'; these tiny files cannot match.
        fashion_mnist.download_fashion_mnist(target, base_url=http_dir(served), timeout=10)
    assert_data_error(exc_info, "sha256 mismatch", fashion_mnist.FILES[0])
    assert not target.exists() or not any(target.iterdir())


def test_download_of_a_truncated_gzip_is_refused(isolated_search, http_dir):
    served = write_tiny_fmnist(isolated_search / "served")
    first = served / fashion_mnist.FILES[0]
    first.write_bytes(first.read_bytes()[:-12])  # cut inside the deflate stream / trailer
    target = isolated_search / "dl"
    with pytest.raises(DataError) as exc_info:
        fashion_mnist.download_fashion_mnist(target, base_url=http_dir(served), timeout=10)
    assert_data_error(exc_info, "not a complete gzip file", fashion_mnist.FILES[0])
    assert not target.exists() or not any(target.iterdir())


def test_download_rejects_non_http_urls(tmp_path):
    with pytest.raises(DataError) as exc_info:
        fashion_mnist.download_fashion_mnist(tmp_path, base_url="file:///etc/")
    assert_data_error(exc_info, "file:///etc/", "http")


# --------------------------------------------------------------------------- image folder


def test_image_folder_flat_layout(tmp_path):
    write_class_images(tmp_path / "imgs", {"dog": 10, "cat": 11})
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / "imgs" / ".hidden").mkdir()
    raw = load_image_folder(tmp_path / "imgs", image_size=8, channels=3)
    assert raw.class_names == ("cat", "dog")  # sorted, not creation order
    assert raw.x_test is None and raw.y_test is None
    assert raw.x_train.shape == (21, 8, 8, 3) and raw.x_train.dtype == np.uint8
    np.testing.assert_array_equal(raw.y_train, [0] * 11 + [1] * 10)
    # Flat images keep their value through decode, gray->RGB and resize (cat was written second: 20 + i).
    np.testing.assert_array_equal(raw.x_train[:4, 0, 0, 0], [20, 21, 30, 22])  # sorted by name: img0, img1, img10, img2
    assert (raw.x_train[1] == raw.x_train[1, 0, 0, 0]).all()


def test_image_folder_train_test_layout_and_jpeg(tmp_path):
    from edgecnn._tf import tensorflow

    tf = tensorflow()
    write_class_images(tmp_path / "train", {"a": 10, "b": 10})
    write_class_images(tmp_path / "test", {"a": 1})
    jpeg = tf.io.encode_jpeg(tf.fill([10, 10, 3], tf.constant(200, tf.uint8))).numpy()
    (tmp_path / "test" / "a" / "photo.JPG").write_bytes(jpeg)
    raw = load_image_folder(tmp_path, image_size=6, channels=1)
    assert raw.class_names == ("a", "b")
    assert raw.x_train.shape == (20, 6, 6, 1) and raw.x_test.shape == (2, 6, 6, 1)
    np.testing.assert_array_equal(raw.y_test, [0, 0])
    assert abs(int(raw.x_test[1, 3, 3, 0]) - 200) <= 3  # JPEG is lossy


@pytest.mark.parametrize(
    "layout, fragment",
    [
        ("missing", "does not exist"),
        ("one-class", "at least 2 class"),
        ("empty-class", "no .jpg/.jpeg/.png"),
        ("too-few-in-class", "class has 9 images, fewer than the minimum of 10 per class"),
        ("undecodable", "cannot decode"),
        ("unknown-test-class", "no counterpart"),
    ],
)
def test_image_folder_errors(tmp_path, layout, fragment):
    root = tmp_path / "imgs"
    named = root
    if layout == "one-class":
        write_class_images(root, {"only": 2})
        named = root
    elif layout == "empty-class":
        write_class_images(root, {"a": 10})
        (root / "b").mkdir()
        named = root / "b"
    elif layout == "too-few-in-class":
        write_class_images(root, {"a": 10, "b": 9})
        named = root / "b"
    elif layout == "undecodable":
        write_class_images(root, {"a": 10, "b": 10})
        named = root / "b" / "broken.png"
        named.write_bytes(b"\x89PNG but not really")
    elif layout == "unknown-test-class":
        write_class_images(root / "train", {"a": 10, "b": 10})
        write_class_images(root / "test", {"c": 1})
        named = root / "test"
    with pytest.raises(DataError) as exc_info:
        load_image_folder(root, image_size=8, channels=3)
    assert_data_error(exc_info, str(named), fragment)


def test_image_folder_dataset_carves_test_split(tmp_path):
    write_class_images(tmp_path / "imgs", {"a": 50, "b": 50}, size=4, step=100)
    cfg = DataConfig(source="image_folder", path=tmp_path / "imgs", image_size=32, channels=3, test_fraction=0.2, validation_fraction=0.1)
    ds = load_dataset(cfg, seed=3)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (72, 8, 20)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [10, 10])
    assert ds.x_train.shape[1:] == (32, 32, 3) and ds.class_names == ("a", "b")
    # Every image is flat with a distinct value, so the three splits must not share one.
    values = [set(x[:, 0, 0, 0].tolist()) for x in (ds.x_train, ds.x_val, ds.x_test)]
    assert sum(map(len, values)) == 100 and not (values[0] & values[1] or values[0] & values[2] or values[1] & values[2])


def write_mac_and_windows_litter(root: Path) -> None:
    """What a zip made on a Mac, Explorer and a NAS leave in an image folder."""
    png = png_bytes(np.zeros((4, 4), np.uint8))
    for cls in ("a", "b"):
        (root / "__MACOSX" / cls).mkdir(parents=True, exist_ok=True)
        (root / "__MACOSX" / cls / "._img0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        (root / cls / f"._img{cls}.png").write_bytes(png)  # a resource fork with an image name
    (root / ".git").mkdir()
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "a" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "b" / "@eaDir").mkdir()
    (root / "b" / "notes.txt").write_text("not an image")


def test_image_folder_skips_hidden_and_system_entries_and_says_which(tmp_path):
    from edgecnn.data.image_folder import list_image_files, read_image_folder

    root = tmp_path / "imgs"
    write_class_images(root, {"a": 10, "b": 10}, size=4)
    write_mac_and_windows_litter(root)
    raw, notes = read_image_folder(root, image_size=4, channels=1)
    assert raw.class_names == ("a", "b") and len(raw.y_train) == 20
    assert len(notes) == 1 and "\n" not in notes[0]
    note = notes[0]
    assert note.startswith(f"{root}: skipped 7 hidden/system entries (")
    assert ".DS_Store" in note and ".git/" in note and "__MACOSX/" in note and "and 4 more" in note
    assert "1 entry in class folders that is not a .jpg/.jpeg/.png image (b/notes.txt)" in note
    # The cache key lists the same files the loader reads.
    assert sorted(p.relative_to(root).as_posix() for p in list_image_files(root)) == sorted(
        f"{c}/img{i}.png" for c in "ab" for i in range(10))


def test_clean_image_folder_has_no_note(tmp_path):
    from edgecnn.data.image_folder import read_image_folder

    write_class_images(tmp_path / "imgs", {"a": 10, "b": 10}, size=4)
    assert read_image_folder(tmp_path / "imgs", image_size=4, channels=1)[1] == ()


def test_dataset_carries_the_skipped_note_for_the_build_log(tmp_path):
    root = tmp_path / "imgs"
    write_class_images(root / "train", {"a": 10, "b": 10}, size=4)
    write_class_images(root / "test", {"a": 10, "b": 10}, size=4)
    (root / "__MACOSX" / "train").mkdir(parents=True)
    (root / "val" / "a").mkdir(parents=True)
    (root / "test" / "a" / "Thumbs.db").write_bytes(b"\xd0\xcf")
    ds = load_dataset(DataConfig(source="image_folder", path=root, image_size=32, channels=1), seed=0)
    assert ds.class_names == ("a", "b") and len(ds.y_test) == 20
    (note,) = ds.notes
    assert "2 hidden/system entries (test/a/Thumbs.db, __MACOSX/)" in note
    assert "1 folder beside train/ and test/ (val/)" in note
    assert ds.summary()["notes"] == [note]


def test_two_images_in_total_are_refused(tmp_path):
    """Before the fix a folder with one image per class built silently."""
    write_class_images(tmp_path / "imgs", {"a": 1, "b": 1}, size=4)
    with pytest.raises(DataError) as exc_info:
        load_dataset(DataConfig(source="image_folder", path=tmp_path / "imgs"), seed=0)
    assert_data_error(exc_info, str(tmp_path / "imgs" / "a"), "class has 1 image,", "minimum of 10 per class")


def test_test_split_too_small_for_a_meaningful_accuracy_is_refused(tmp_path):
    from edgecnn.data.dataset import MIN_TEST_IMAGES

    write_class_images(tmp_path / "imgs", {"a": 10, "b": 10}, size=4)
    with pytest.raises(DataError) as exc_info:
        load_dataset(DataConfig(source="image_folder", path=tmp_path / "imgs"), seed=0)
    assert_data_error(exc_info, str(tmp_path / "imgs"), "test split has 4 images", f"minimum of {MIN_TEST_IMAGES}",
                      "25 points of accuracy", "data.test_fraction")
    root = tmp_path / "split"
    write_class_images(root / "train", {"a": 10, "b": 10}, size=4)
    write_class_images(root / "test", {"a": 5, "b": 5}, size=4)
    with pytest.raises(DataError) as exc_info:
        load_dataset(DataConfig(source="image_folder", path=root), seed=0)
    assert_data_error(exc_info, str(root), "test split has 10 images", "add images to the test split")


def test_recipe_test_limit_floor_is_the_data_minimum():
    """recipe.py spells the minimum as a literal (validate imports no numpy); keep them equal."""
    from edgecnn.data.dataset import MIN_TEST_IMAGES

    ge = [m.ge for m in DataConfig.model_fields["test_limit"].metadata if hasattr(m, "ge")]
    assert ge == [MIN_TEST_IMAGES]


# --------------------------------------------------------------------------- splits


def test_stratified_subset_is_balanced_and_deterministic():
    labels = np.repeat(np.arange(4), [100, 100, 50, 10])
    a = stratified_subset(labels, 52, np.random.default_rng([7, 2]))
    b = stratified_subset(labels, 52, np.random.default_rng([7, 2]))
    c = stratified_subset(labels, 52, np.random.default_rng([8, 2]))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(a) == 52 and len(np.unique(a)) == 52
    np.testing.assert_array_equal(np.bincount(labels[a]), [20, 20, 10, 2])


def test_stratified_split_covers_and_keeps_every_class():
    labels = np.repeat(np.arange(3), [30, 20, 2])
    keep, held = stratified_split(labels, 0.2, np.random.default_rng(0))
    assert not set(keep) & set(held) and len(keep) + len(held) == len(labels)
    np.testing.assert_array_equal(np.bincount(labels[held], minlength=3), [6, 4, 0])
    assert set(labels[keep]) == {0, 1, 2}
    keep, held = stratified_split(labels, 0.0, np.random.default_rng(0))
    assert len(held) == 0 and len(keep) == len(labels)


@needs_fmnist
def test_load_dataset_limits_are_stratified_and_seeded(isolated_search, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", SYSTEM_FMNIST)
    cfg = DataConfig(train_limit=500, test_limit=100, validation_fraction=0.2, image_size=32, channels=3)
    ds = load_dataset(cfg, seed=0)
    again = load_dataset(cfg, seed=0)
    other = load_dataset(cfg, seed=1)
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape == (400, 32, 32, 3) and ds.x_val.shape == (100, 32, 32, 3) and ds.x_test.shape == (100, 32, 32, 3)
    for y, per_class in ((ds.y_train, 40), (ds.y_val, 10), (ds.y_test, 10)):
        assert y.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(y), [per_class] * 10)
    # Gray was repeated to RGB.
    assert (ds.x_train[..., 0] == ds.x_train[..., 2]).all()
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    np.testing.assert_array_equal(ds.y_val, again.y_val)
    assert not np.array_equal(ds.x_train, other.x_train)
    assert ds.fingerprint == again.fingerprint != other.fingerprint
    assert ds.normalization == NormalizationSpec((127.5,) * 3, (127.5,) * 3)

    reps = representative_images(ds, 50, seed=0)
    assert reps.shape == (50, 32, 32, 3) and reps.dtype == np.uint8
    np.testing.assert_array_equal(reps, representative_images(ds, 50, seed=0))
    assert representative_images(ds, 10_000, seed=0).shape[0] == 400


# --------------------------------------------------------------------------- preprocessing


def test_to_model_input_channels_and_resize():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    rgb = to_model_input(gray, 28, 3)
    assert rgb.shape == (5, 28, 28, 3) and (rgb == gray[..., None]).all()
    assert to_model_input(rgb, 28, 3) is rgb  # already model-sized: no copy
    np.testing.assert_array_equal(to_model_input(rgb, 28, 1)[..., 0], gray)  # equal channels: gray survives

    colour = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    expected = np.rint(colour.astype(np.float32) @ np.float32([0.2989, 0.5870, 0.1140]))
    np.testing.assert_array_equal(to_model_input(colour, 4, 1)[..., 0], expected)

    flat = np.full((3, 28, 28, 1), 77, dtype=np.uint8)
    resized = to_model_input(flat, 40, 3)
    assert resized.shape == (3, 40, 40, 3) and (resized == 77).all()
    with pytest.raises(DataError):
        to_model_input(flat.astype(np.float32), 40, 3)


def test_normalization_round_trip():
    spec = NormalizationSpec.from_config(Normalization(mean=[120.0, 110.0, 100.0], std=[60.0]), channels=3)
    assert spec.std == (60.0, 60.0, 60.0) and spec.channels == 3
    pixels = np.random.default_rng(0).integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    x = spec.apply(pixels)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[..., 1], (pixels[..., 1] - 110.0) / 60.0, rtol=1e-6)
    np.testing.assert_array_equal(spec.invert(x), pixels)
    stored = json.loads(json.dumps(spec.to_dict()))
    assert NormalizationSpec.from_dict(stored) == spec
    np.testing.assert_allclose(spec.apply_tf(pixels).numpy(), x, rtol=1e-6)

    with pytest.raises(DataError):
        NormalizationSpec((0.0,), (0.0,))
    with pytest.raises(DataError):
        NormalizationSpec.from_dict({"mean": [1.0]})
    with pytest.raises(DataError):
        spec.apply(pixels[..., :1])


def test_augmenter_is_deterministic_and_does_what_it_says():
    from edgecnn._tf import tensorflow

    tf = tensorflow()
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(16, 10, 10, 1)).astype(np.float32))
    key = tf.constant(5, tf.int64)

    flip_only = make_augmenter(Augment(horizontal_flip=True, translate=0.0), seed=1)
    out = flip_only(images, key).numpy()
    np.testing.assert_array_equal(out, flip_only(images, key).numpy())
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images.numpy())]
    kept = [np.array_equal(o, i) for o, i in zip(out, images.numpy())]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)

    # One bright pixel in the middle moves by at most round(0.2 * 10) = 2 pixels per axis.
    dot = np.zeros((16, 10, 10, 1), np.float32)
    dot[:, 5, 5, 0] = 1.0
    shift = make_augmenter(Augment(horizontal_flip=False, translate=0.2), seed=1)
    moved = shift(tf.constant(dot), key).numpy()
    positions = [tuple(np.argwhere(m[..., 0] == 1.0)[0]) for m in moved]
    assert all(abs(r - 5) <= 2 and abs(c - 5) <= 2 for r, c in positions)
    assert len(set(positions)) > 1
    assert not np.array_equal(moved, shift(tf.constant(dot), tf.constant(6, tf.int64)).numpy())
    single = shift(tf.constant(dot[0]), key).numpy()
    assert single.shape == (10, 10, 1)

    # Edge fill repeats the border; zero fill writes zeros.
    ones = tf.ones((8, 10, 10, 1))
    assert (make_augmenter(Augment(horizontal_flip=False, translate=0.3), 2)(ones, key).numpy() == 1).all()
    zero_filled = make_augmenter(Augment(horizontal_flip=False, translate=0.3), 2, fill="zero")(ones, key).numpy()
    assert (zero_filled == 0).any()


def test_make_tf_dataset_normalizes_batches_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    y = np.arange(50) % 5
    spec = NormalizationSpec((127.5,) * 3, (127.5,) * 3)

    plain = list(make_tf_dataset(x, y, spec, batch_size=16))
    assert [len(b[1]) for b in plain] == [16, 16, 16, 2]
    got_x = np.concatenate([b[0].numpy() for b in plain])
    np.testing.assert_allclose(got_x, spec.apply(x), rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in plain]), y)
    assert plain[0][0].dtype.name == "float32" and plain[0][1].dtype.name == "int64"

    def epochs(seed):
        ds = make_tf_dataset(x, y, spec, 16, augment=Augment(), shuffle=True, seed=seed)
        return [[(bx.numpy(), by.numpy()) for bx, by in ds] for _ in range(2)]

    first, second, other = epochs(3), epochs(3), epochs(4)
    for e1, e2 in zip(first, second):
        for (ax, ay), (bx, by) in zip(e1, e2):
            np.testing.assert_array_equal(ax, bx)
            np.testing.assert_array_equal(ay, by)
    assert not np.array_equal(first[0][0][1], first[1][0][1]), "each epoch reshuffles"
    assert not np.array_equal(first[0][0][1], other[0][0][1]), "the seed matters"

    soft = rng.random((50, 5)).astype(np.float32)
    bx, targets = next(iter(make_tf_dataset(x, y, spec, 10, extra=soft)))
    assert set(targets) == {"label", "soft"}
    np.testing.assert_array_equal(targets["soft"].numpy(), soft[:10])
    with pytest.raises(DataError):
        make_tf_dataset(x, y[:10], spec, 8)


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_tracks_config_seed_and_files(tmp_path):
    write_class_images(tmp_path / "imgs", {"a": 2, "b": 2})
    cfg = DataConfig(source="image_folder", path=tmp_path / "imgs")
    base = dataset_fingerprint(cfg, 0)
    assert len(base) == 64 and base == dataset_fingerprint(cfg, 0)
    assert dataset_fingerprint(cfg, 1) != base
    assert dataset_fingerprint(cfg.model_copy(update={"image_size": 64}), 0) != base
    write_class_images(tmp_path / "imgs", {"a": 3})  # one more image in class a
    assert dataset_fingerprint(cfg, 0) != base


def test_fingerprint_is_fast_and_does_not_import_tensorflow(tmp_path):
    folder = SYSTEM_FMNIST if fashion_mnist.find_files(SYSTEM_FMNIST) else write_tiny_fmnist(tmp_path / "fm")
    code = (
        "import sys, time\n"
        "from edgecnn.recipe import DataConfig\n"
        "from edgecnn.data import dataset_fingerprint\n"
        f"cfg = DataConfig(path={str(folder)!r})\n"
        "t = time.perf_counter(); fp = dataset_fingerprint(cfg, 0); dt = time.perf_counter() - t\n"
        "print(fp, dt, 'tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    fp, seconds, tf_loaded = out.stdout.split()
    assert len(fp) == 64 and tf_loaded == "False"
    assert float(seconds) < 0.5, f"fingerprint took {seconds} s"
