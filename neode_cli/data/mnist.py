"""MNIST and Fashion-MNIST from IDX files: read, write, locate, download and verify.

The four files of a dataset (``train-images-idx3-ubyte`` ...) may be gzipped or raw. They are looked for in
the dataset folder (``data.root``), then in the dataset's system folders (Debian's ``dataset-fashion-mnist``
package for Fashion-MNIST); files still missing are downloaded into ``data.root`` from the mirrors, verified
by MD5 against the published checksums and renamed into place only when complete (atomic).

Every problem a user can cause (a missing, corrupt or truncated file, no network) raises :class:`DataError`
with one line that names the file and says what to do. Arrays come back as ``uint8`` tensors; scaling and
normalisation belong to the task.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "DataError",
    "DatasetSpec",
    "MNIST",
    "FASHION_MNIST",
    "DATASETS",
    "MnistData",
    "read_idx",
    "write_idx",
    "write_dataset",
    "locate_or_download",
    "load_dataset",
]

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A dataset file is missing, corrupt or could not be fetched; the message is one line for the user."""


# IDX type byte -> big-endian numpy dtype (the format is big-endian throughout).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What identifies one IDX dataset: its file names with published MD5s, mirrors and system folders.

    ``files`` maps a role (``train_images``, ``train_labels``, ``test_images``, ``test_labels``) to the
    gzipped file name and the MD5 of that ``.gz`` file as published. ``search_paths`` are folders other than
    ``data.root`` where a system package may have installed the files.
    """

    name: str
    files: dict[str, tuple[str, str]]
    mirrors: tuple[str, ...]
    search_paths: tuple[str, ...] = ()
    num_classes: int = 10


MNIST = DatasetSpec(
    name="mnist",
    files={
        "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    # yann.lecun.com now often refuses downloads; these two mirrors serve the identical files.
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
)

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    # MD5s as published in zalandoresearch/fashion-mnist's README (also shipped in Debian's package docs).
    files={
        "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    search_paths=("/usr/share/datasets/fashion-mnist",),
)

#: Dataset name (as in ``conf/data/<name>.yaml``) -> spec.
DATASETS: dict[str, DatasetSpec] = {MNIST.name: MNIST, FASHION_MNIST.name: FASHION_MNIST}


@dataclasses.dataclass
class MnistData:
    """A loaded dataset: ``uint8`` images ``(N, 28, 28)`` and ``uint8`` labels ``(N,)`` for both splits."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    sources: dict[str, str]  # role -> path the array was read from


# --------------------------------------------------------------------------------------------- IDX format


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it starts with the gzip magic (whatever its extension)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        # EOFError: the compressed stream ends early (truncated download); OSError/zlib.error: bad data/CRC.
        raise DataError(f"{path} is a corrupt or truncated gzip file ({exc}); delete it and download it "
                        f"again") from None


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read one IDX file (gzipped or raw, detected from its content) into a tensor of its stored shape.

    The header (magic ``0x0000``, type byte, number of dimensions, big-endian dimension sizes) and the data
    length are validated: a bad magic, an unknown type, a zero dimension count, or data shorter or longer
    than the dimensions imply raise :class:`DataError` naming the file. ``uint8`` data comes back as a
    ``torch.uint8`` tensor; other types as the matching native-endian torch dtype.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path} is not an IDX file: {len(data)} bytes, shorter than the 4-byte header; "
                        f"delete it and download it again")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path} is not an IDX file (magic bytes {data[:4].hex()}); delete it and download "
                        f"it again")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{path} is truncated: its header announces {ndim} dimensions but the file ends "
                        f"after {len(data)} bytes; delete it and download it again")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "corrupt (trailing bytes)"
        raise DataError(f"{path} is {what}: shape {tuple(dims)} needs {expected} data bytes, found {actual}; "
                        f"delete it and download it again")
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    # astype(native) copies, so the tensor owns writable memory independent of ``data``.
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_idx(path: str | os.PathLike, array: torch.Tensor | np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file at ``path`` (atomically); gzipped when ``compress`` or the name ends .gz.

    Supported dtypes: uint8, int8, int16, int32, float32, float64. Returns the path written. Used to make
    tiny datasets for tests and fixtures; ``read_idx(write_idx(p, a))`` equals ``a``.
    """
    path = Path(path)
    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
    native = arr.dtype.newbyteorder("=")
    if native not in codes or arr.ndim == 0:
        raise ValueError(f"cannot write dtype {arr.dtype} with {arr.ndim} dims as IDX")
    header = struct.pack(">HBB", 0, codes[native], arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    big_endian = _IDX_DTYPES[codes[native]]
    payload = header + np.ascontiguousarray(arr, dtype=big_endian).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        payload = gzip.compress(payload, mtime=0)
    _atomic_write(path, payload)
    return path


def write_dataset(root: str | os.PathLike, train_images, train_labels, test_images, test_labels,
                  compress: bool = True) -> Path:
    """Write the four standard MNIST-layout files into folder ``root`` (gzipped unless ``compress=False``).

    Images ``(N, H, W)`` and labels ``(N,)`` should be uint8. Returns ``root``. The result loads with
    ``load_dataset(..., root=root)`` exactly as the real MNIST or Fashion-MNIST files do.
    """
    root = Path(root)
    arrays = {"train_images": train_images, "train_labels": train_labels,
              "test_images": test_images, "test_labels": test_labels}
    for role, array in arrays.items():
        gz_name = MNIST.files[role][0]
        write_idx(root / (gz_name if compress else gz_name[: -len(".gz")]), array, compress=compress)
    return root


# ----------------------------------------------------------------------------------------- locate/fetch


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _find_local(file_name: str, folders: Sequence[Path]) -> Path | None:
    """The first existing ``<folder>/<name>.gz`` or raw ``<folder>/<name>`` over ``folders``, else None."""
    raw_name = file_name[: -len(".gz")]
    for folder in folders:
        for candidate in (folder / file_name, folder / raw_name):
            if candidate.is_file():
                return candidate
    return None


def _download(url: str, target: Path, md5: str, timeout: float) -> None:
    """Stream ``url`` into a temporary file beside ``target``, check its MD5, then rename it to ``target``.

    Raises ``OSError`` (network) or :class:`DataError` (checksum mismatch); never leaves a partial file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                fh.write(block)
        if digest.hexdigest() != md5:
            raise DataError(f"checksum mismatch for {url}: MD5 {digest.hexdigest()}, expected {md5}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _available_elsewhere(spec: DatasetSpec) -> list[tuple[DatasetSpec, Path]]:
    """Other datasets whose four files are all in one of their system folders (e.g. Debian's Fashion-MNIST)."""
    found = []
    for other in DATASETS.values():
        if other.name == spec.name:
            continue
        for folder in map(Path, other.search_paths):
            if all(_find_local(name, [folder]) for name, _ in other.files.values()):
                found.append((other, folder))
                break
    return found


def _missing_message(spec: DatasetSpec, root: Path, missing: Sequence[str], reasons: Sequence[str]) -> str:
    names = ", ".join(spec.files[role][0] for role in missing)
    where = [str(root.resolve())] + list(spec.search_paths)
    extra = (f" (or install Debian's dataset-fashion-mnist, which puts them in {spec.search_paths[0]})"
             if spec.search_paths else "")
    why = f" Download failed: {'; '.join(reasons)}." if reasons else ""
    instead = "".join(f" {other.name} is on this machine ({folder}): add data={other.name} to train on it instead."
                      for other, folder in _available_elsewhere(spec))
    return (f"{spec.name} files not found in {' or '.join(where)}.{why} Put {names} (gzipped or raw) into "
            f"{root.resolve()}{extra}, or set data.root to the folder that holds them, or data.mirrors=[URL,...] to "
            f"download from another server.{instead}")


def locate_or_download(spec: DatasetSpec, root: str | os.PathLike, mirrors: Sequence[str] | None = None,
                       download: bool = True, timeout: float = 30.0) -> dict[str, Path]:
    """Paths of the dataset's four files, downloading the missing ones into ``root`` when ``download``.

    Local files (``root`` first, then ``spec.search_paths``) are taken as they are, gzipped or raw; their
    content is validated when read. Downloads try each mirror (``mirrors`` overrides ``spec.mirrors``; a
    base URL to which the file name is appended) until one delivers a file with the published MD5. Raises
    :class:`DataError` with one line naming the files and the folder to put them in when any is still missing.
    """
    root = Path(root)
    folders = [root] + [Path(p) for p in spec.search_paths]
    bases = list(mirrors) if mirrors else list(spec.mirrors)
    found: dict[str, Path] = {}
    missing: list[str] = []
    reasons: list[str] = []
    unreachable: set[str] = set()  # mirrors that failed at the network level are not asked again
    for role, (file_name, md5) in spec.files.items():
        local = _find_local(file_name, folders)
        if local is not None:
            found[role] = local
            continue
        if download:
            target = root / file_name
            for base in (b for b in bases if b not in unreachable):
                url = base.rstrip("/") + "/" + file_name
                log.info("downloading %s", url)
                try:
                    _download(url, target, md5, timeout)
                except DataError as exc:
                    reasons.append(str(exc))
                except urllib.error.HTTPError as exc:  # the server answered: try the other files there
                    reasons.append(f"{url}: HTTP {exc.code} {exc.reason}")
                except (OSError, ValueError) as exc:  # no connection, DNS, timeout, malformed URL
                    unreachable.add(base)
                    reasons.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
                else:
                    found[role] = target
                    break
        if role not in found:
            missing.append(role)
    if missing:
        # Keep the message to one line: only the first reasons, they usually repeat per file.
        raise DataError(_missing_message(spec, root, missing, list(dict.fromkeys(reasons))[:2]))
    return found


def load_dataset(name: str, root: str | os.PathLike, mirrors: Sequence[str] | None = None,
                 download: bool = True, spec: DatasetSpec | None = None) -> MnistData:
    """Load dataset ``name`` (a key of :data:`DATASETS`) from ``root``, fetching it if needed (see above).

    Checks that images are ``uint8 (N, H, W)``, labels ``uint8 (N,)`` with the same ``N`` and values below
    the number of classes; any violation raises :class:`DataError` naming the file.
    """
    if spec is None:
        if name not in DATASETS:
            raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
        spec = DATASETS[name]
    paths = locate_or_download(spec, root, mirrors=mirrors, download=download)
    arrays = {role: read_idx(path) for role, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        img_path, lbl_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise DataError(f"{img_path} holds {images.dtype} data of shape {tuple(images.shape)}; expected "
                            f"uint8 images (N, H, W)")
        if labels.dtype != torch.uint8 or labels.dim() != 1:
            raise DataError(f"{lbl_path} holds {labels.dtype} data of shape {tuple(labels.shape)}; expected "
                            f"uint8 labels (N,)")
        if len(images) != len(labels):
            raise DataError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
        if len(labels) and int(labels.max()) >= spec.num_classes:
            raise DataError(f"{lbl_path} has label {int(labels.max())}, outside 0..{spec.num_classes - 1}")
    return MnistData(name=spec.name, sources={role: str(p) for role, p in paths.items()}, **arrays)
