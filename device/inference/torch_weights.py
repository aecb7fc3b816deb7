"""Read a PyTorch checkpoint's tensors into numpy arrays, without PyTorch and without running its code.

A `.pt` file is either a zip archive (PyTorch >= 1.6: `*/data.pkl` plus one raw file per storage)
or the legacy stream (five pickles in a row: magic number, protocol version, system info, the
object, the storage keys, then each storage as an int64 element count and its raw bytes). Both
hold a pickle whose tensors are built by `torch._utils._rebuild_tensor_v2` from storages named
by persistent ids. `load_checkpoint` reads that pickle with an unpickler that resolves only the
few globals a state dict needs (an allow-list; anything else is refused, so a crafted file cannot
run code) and rebuilds each tensor as a numpy view of its storage with the recorded offset, shape
and strides. Only little-endian float/int storages are accepted.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from device.errors import ModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
MAX_PICKLE_BYTES = 16 << 20  # the object pickle of a state dict is small; its tensors are not in it


class _StorageType:
    """Stands in for `torch.FloatStorage` and friends: only its dtype matters."""

    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


class _Storage:
    """A storage named by the pickle, filled with bytes later (legacy) or at once (zip)."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.array: np.ndarray | None = None


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        data = self.storage.array
        if data is None:
            raise ModelError("checkpoint: a tensor's storage was never read")
        count = int(np.prod(self.size)) if self.size else 1
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) if count else 0
        if self.offset < 0 or last >= len(data) or any(s < 0 for s in self.stride):
            raise ModelError("checkpoint: a tensor reaches outside its storage")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[s * item for s in self.stride], writeable=False)
        return np.array(view, dtype=data.dtype.newbyteorder("="))


def _rebuild_tensor_v2(storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                       *_ignored: Any) -> _Tensor:
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data: _Tensor, *_ignored: Any) -> _Tensor:
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, handle: BinaryIO, storages: dict[str, _Storage], zip_reader: Any = None) -> None:
        super().__init__(handle)
        self.storages = storages
        self.zip_reader = zip_reader

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ModelError(f"checkpoint: refuses to load {module}.{name} (not part of a plain state dict)") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise ModelError("checkpoint: unknown persistent id")
        # legacy: (tag, storage type, key, location, numel, view metadata); zip: (tag, type, key, location, numel)
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType) or numel < 0:
            raise ModelError("checkpoint: unsupported storage")
        if key not in self.storages:
            storage = _Storage(storage_type.dtype, numel)
            if self.zip_reader is not None:
                raw = self.zip_reader(key)
                if len(raw) != numel * storage.dtype.itemsize:
                    raise ModelError(f"checkpoint: storage {key} has {len(raw)} bytes, "
                                     f"expected {numel * storage.dtype.itemsize}")
                storage.array = np.frombuffer(raw, dtype=storage.dtype)
            self.storages[key] = storage
        return self.storages[key]


def _tensors_to_numpy(obj: Any, depth: int = 0) -> Any:
    if depth > 32:
        raise ModelError("checkpoint: nested too deeply")
    if isinstance(obj, _Tensor):
        return obj.to_numpy()
    if isinstance(obj, dict):
        return {k: _tensors_to_numpy(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_tensors_to_numpy(v, depth + 1) for v in obj)
    return obj


def _load_legacy(handle: BinaryIO) -> Any:
    def plain(what: str) -> Any:
        try:
            return _RestrictedUnpickler(handle, {}).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise ModelError(f"checkpoint: cannot read its {what}: {exc}") from None

    if plain("magic number") != LEGACY_MAGIC:
        raise ModelError("checkpoint: not a PyTorch file (wrong magic number)")
    if plain("protocol version") != 1001:
        raise ModelError("checkpoint: unsupported legacy protocol version")
    plain("system info")
    storages: dict[str, _Storage] = {}
    try:
        result = _RestrictedUnpickler(handle, storages).load()
        keys = pickle.Unpickler(handle).load()  # a plain list of strings: no globals involved
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ModelError(f"checkpoint: cannot read its object: {exc}") from None
    if not isinstance(keys, list):
        raise ModelError("checkpoint: storage key list missing")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise ModelError(f"checkpoint: storage {key} is not referenced")
        header = handle.read(8)
        if len(header) != 8:
            raise ModelError("checkpoint: truncated storage")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * storage.dtype.itemsize
        raw = handle.read(nbytes)
        if numel != storage.numel or len(raw) != nbytes:
            raise ModelError(f"checkpoint: storage {key} is truncated or has the wrong size")
        storage.array = np.frombuffer(raw, dtype=storage.dtype)
    return result


def _load_zip(archive: zipfile.ZipFile) -> Any:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise ModelError("checkpoint: zip archive without exactly one data.pkl")
    prefix = pickles[0][: -len("data.pkl")]
    info = archive.getinfo(pickles[0])
    if info.file_size > MAX_PICKLE_BYTES:
        raise ModelError("checkpoint: data.pkl is too large")

    def read_storage(key: str) -> bytes:
        try:
            return archive.read(f"{prefix}data/{key}")
        except KeyError:
            raise ModelError(f"checkpoint: storage {key} missing from the archive") from None

    try:
        return _RestrictedUnpickler(io.BytesIO(archive.read(info)), {}, read_storage).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ModelError(f"checkpoint: cannot read data.pkl: {exc}") from None


def load_checkpoint(path: str | Path) -> Any:
    """The checkpoint's object (dicts, lists, numbers, strings) with every tensor as a numpy array."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _tensors_to_numpy(_load_zip(archive))
        with path.open("rb") as handle:
            return _tensors_to_numpy(_load_legacy(handle))
    except OSError as exc:
        raise ModelError(f"{path}: cannot read: {exc.strerror or exc}") from None
