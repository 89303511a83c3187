"""IDX reading/writing, local discovery, downloads from a local HTTP server, and the one-line errors."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest
import torch

from neode_cli.data import mnist
from neode_cli.data.mnist import (FASHION_MNIST, MNIST, DataError, DatasetSpec, load_dataset,
                                  locate_or_download, read_idx, write_dataset, write_idx)

FILE_NAMES = [name for name, _ in MNIST.files.values()]


def _tiny_arrays(n_train: int = 6, n_test: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = lambda n: torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)  # noqa: E731
    labels = lambda n: torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)  # noqa: E731
    return images(n_train), labels(n_train), images(n_test), labels(n_test)


# ------------------------------------------------------------------------------------------ IDX format


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32,
                                   torch.float64])
def test_idx_roundtrip(tmp_path, name, dtype):
    array = (torch.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).to(dtype)
    path = write_idx(tmp_path / name, array)
    back = read_idx(path)
    assert back.dtype == dtype and torch.equal(back, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")


def test_idx_header_is_the_published_layout(tmp_path):
    path = write_idx(tmp_path / "labels", np.array([3, 1, 4], dtype=np.uint8))
    # magic 0x00000801 (uint8, 1 dim), big-endian length 3, then the bytes.
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 3, 1, 4])
    wide = write_idx(tmp_path / "wide", np.array([[258]], dtype=np.int32))
    assert wide.read_bytes() == bytes([0, 0, 0x0C, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 2])


def test_gzip_detected_by_content_not_name(tmp_path):
    array = torch.arange(12, dtype=torch.uint8).reshape(3, 4)
    raw_named_gz = write_idx(tmp_path / "x.gz", array, compress=False)
    gz_named_raw = write_idx(tmp_path / "y", array, compress=True)
    assert torch.equal(read_idx(raw_named_gz), array) and torch.equal(read_idx(gz_named_raw), array)


def _raw_idx(tmp_path) -> bytes:
    return write_idx(tmp_path / "good", torch.zeros(4, 28, 28, dtype=torch.uint8)).read_bytes()


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b[:-1], "is truncated: shape (4, 28, 28) needs 3136 data bytes, found 3135"),
    (lambda b: b[:9], "is truncated: its header announces 3 dimensions"),
    (lambda b: b[:3], "is not an IDX file"),
    (lambda b: b + b"\x00", "is corrupt (trailing bytes)"),
    (lambda b: b"\x01" + b[1:], "is not an IDX file (magic bytes 01000803)"),
    (lambda b: b[:2] + b"\x07" + b[3:], "is not an IDX file"),  # unknown type code
])
def test_corrupt_raw_files_give_one_line_naming_the_file(tmp_path, corrupt, message):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(corrupt(_raw_idx(tmp_path)))
    with pytest.raises(DataError) as info:
        read_idx(bad)
    text = str(info.value)
    assert message in text and str(bad) in text and "\n" not in text


def test_truncated_and_corrupt_gzip(tmp_path):
    payload = gzip.compress(_raw_idx(tmp_path))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(payload[: len(payload) // 2])
    flipped = tmp_path / "flipped.gz"
    flipped.write_bytes(payload[:-8] + bytes([payload[-8] ^ 0xFF]) + payload[-7:])  # CRC no longer matches
    for path in (cut, flipped):
        with pytest.raises(DataError, match="corrupt or truncated gzip") as info:
            read_idx(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ local discovery


def test_load_dataset_reads_raw_and_gzipped_files(tmp_path):
    arrays = _tiny_arrays()
    write_dataset(tmp_path / "gz", *arrays)
    write_dataset(tmp_path / "raw", *arrays, compress=False)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(n[:-3] for n in FILE_NAMES)
    for folder in ("gz", "raw"):
        data = load_dataset("mnist", tmp_path / folder, download=False)
        for got, want in zip((data.train_images, data.train_labels, data.test_images, data.test_labels), arrays):
            assert got.dtype == torch.uint8 and torch.equal(got, want)


def test_inconsistent_files_are_rejected(tmp_path):
    train_images, train_labels, test_images, test_labels = _tiny_arrays()
    write_dataset(tmp_path, train_images, train_labels[:-1], test_images, test_labels)
    with pytest.raises(DataError, match="has 6 images but .* has 5 labels"):
        load_dataset("mnist", tmp_path, download=False)
    write_dataset(tmp_path, train_images, train_labels, test_images, test_labels + 10)
    with pytest.raises(DataError, match="outside 0..9"):
        load_dataset("mnist", tmp_path, download=False)


def test_debian_fashion_mnist_folder_is_searched(tmp_path, monkeypatch):
    assert FASHION_MNIST.search_paths == ("/usr/share/datasets/fashion-mnist",)
    system = write_dataset(tmp_path / "usr-share-datasets", *_tiny_arrays())
    debian_here = dataclasses.replace(FASHION_MNIST, search_paths=(str(system),))
    monkeypatch.setitem(mnist.DATASETS, "fashion_mnist", debian_here)
    empty_root = tmp_path / "data" / "fashion_mnist"
    data = load_dataset("fashion_mnist", empty_root, download=False)
    assert data.sources["train_images"] == str(system / "train-images-idx3-ubyte.gz")
    assert not empty_root.exists()  # nothing copied or downloaded
    # A file in data.root takes precedence over the system folder.
    write_dataset(empty_root, *_tiny_arrays(seed=1))
    assert load_dataset("fashion_mnist", empty_root, download=False).sources["test_labels"].startswith(str(empty_root))


def test_missing_files_offline_message(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path / "nowhere", download=False)
    text = str(info.value)
    assert "\n" not in text
    assert f"Put {', '.join(FILE_NAMES)} (gzipped or raw) into {(tmp_path / 'nowhere').resolve()}" in text
    assert "data.root" in text


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar'; valid: mnist, fashion_mnist"):
        load_dataset("cifar", tmp_path)


# ---------------------------------------------------------------------------- downloads (local server)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture()
def mirror(tmp_path):
    """A local HTTP server (thread) serving a tiny dataset; yields (base URL, served folder, spec)."""
    served = write_dataset(tmp_path / "served", *_tiny_arrays())
    md5 = {n: hashlib.md5((served / n).read_bytes()).hexdigest() for n in FILE_NAMES}
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    spec = DatasetSpec("tiny", {role: (n, md5[n]) for role, (n, _) in MNIST.files.items()}, mirrors=(url,))
    try:
        yield url, served, spec
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens here any more: connection refused


def test_download_verifies_and_writes_atomically(mirror, tmp_path):
    url, served, spec = mirror
    root = tmp_path / "root"
    # The first mirror is down, the second has no such files (404): the third delivers.
    data = load_dataset("tiny", root, mirrors=[_closed_port_url(), url + "missing/", url], spec=spec)
    assert sorted(p.name for p in root.iterdir()) == sorted(FILE_NAMES)  # no .part leftovers
    for n in FILE_NAMES:
        assert (root / n).read_bytes() == (served / n).read_bytes()
    assert torch.equal(data.train_images, _tiny_arrays()[0])
    # Second load: found locally, the (now unreachable) mirror is never asked.
    again = load_dataset("tiny", root, mirrors=[_closed_port_url()], spec=spec)
    assert torch.equal(again.test_labels, data.test_labels)


def test_download_only_fetches_missing_files(mirror, tmp_path):
    url, served, spec = mirror
    root = tmp_path / "root"
    root.mkdir()
    raw_labels = gzip.decompress((served / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (root / "t10k-labels-idx1-ubyte").write_bytes(raw_labels)
    paths = locate_or_download(spec, root, mirrors=[url])
    assert paths["test_labels"] == root / "t10k-labels-idx1-ubyte"
    assert not (root / "t10k-labels-idx1-ubyte.gz").exists()


def test_checksum_mismatch_is_rejected_and_nothing_kept(mirror, tmp_path):
    url, _, spec = mirror
    bad = dataclasses.replace(spec, files={**spec.files, "train_labels": ("train-labels-idx1-ubyte.gz", "0" * 32)})
    root = tmp_path / "root"
    with pytest.raises(DataError) as info:
        load_dataset("tiny", root, spec=bad)
    text = str(info.value)
    assert "\n" not in text
    assert f"checksum mismatch for {url}train-labels-idx1-ubyte.gz" in text and "expected " + "0" * 32 in text
    assert "Put train-labels-idx1-ubyte.gz (gzipped or raw) into" in text
    # The verified files stay; the bad one and any temporary file are gone.
    assert sorted(p.name for p in root.iterdir()) == sorted(n for n in FILE_NAMES if "train-labels" not in n)


def test_unreachable_mirror_gives_offline_message(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path / "mnist", mirrors=[_closed_port_url()])
    text = str(info.value)
    assert "\n" not in text and "Download failed: http://127.0.0.1:" in text
    assert f"into {(tmp_path / 'mnist').resolve()}" in text
    assert not list((tmp_path / "mnist").glob("*"))  # no partial downloads left behind


def test_missing_mnist_names_fashion_mnist_when_it_is_on_this_machine(tmp_path, monkeypatch):
    system = write_dataset(tmp_path / "usr-share-datasets", *_tiny_arrays())
    monkeypatch.setitem(mnist.DATASETS, "fashion_mnist", dataclasses.replace(FASHION_MNIST, search_paths=(str(system),)))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path / "nowhere", download=False)
    text = str(info.value)
    assert "\n" not in text and "data.mirrors=[URL,...]" in text
    assert f"fashion_mnist is on this machine ({system}): add data=fashion_mnist to train on it instead." in text
    monkeypatch.setitem(mnist.DATASETS, "fashion_mnist", dataclasses.replace(FASHION_MNIST,
                                                                             search_paths=(str(tmp_path / "no"),)))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path / "nowhere", download=False)
    assert "data=fashion_mnist" not in str(info.value)
