"""Triton's system shared memory extension: the server's registry of regions that clients create.

A client on the same host creates a POSIX shared memory object (``shm_open``,
``/dev/shm/<key>``), registers ``[offset, offset + byte_size)`` of it under a
region name, and then names the region in a request instead of sending the
tensor: an input's ``shared_memory_region``/``shared_memory_byte_size``/
``shared_memory_offset`` parameters say where its bytes are, a requested
output's where the server writes them. Triton's definition:
https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/protocol/extension_shared_memory.html
and ``tritonclient.utils.shared_memory`` on the client side.

The client is never trusted:

* a key is a POSIX shared memory name (``/name``: one leading ``/``, no other,
  not ``.`` or ``..``, no NUL) of a regular file directly under ``/dev/shm``
  that already exists; a symbolic link is refused (``O_NOFOLLOW``), the file is
  opened as it is (``O_RDWR``, never ``O_CREAT``) and is never created,
  resized or unlinked here;
* the registered range must lie inside the file, and every read and write is
  checked against the registered region (``offset + size <= byte_size``)
  before it happens, so nothing outside the region is touched;
* the number of regions and the registered bytes are bounded.

Tensors are copied with ``pread``/``pwrite`` on the open file rather than
through an ``mmap`` of it: a client that shrinks its file after registering
would make touching the mapped pages past the new end raise SIGBUS, which
kills the server; ``pread`` returns short instead, and the request gets an
error. The copy costs the same either way (a tensor read from a region is
copied, so the client may reuse the region while the request is queued).

Unregistering closes the file; the server closes every region when it stops.
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass

from edgehal.errors import EdgehalError
from edgehal.serve.protocol import InvalidRequest

SHM_DIR = "/dev/shm"
DEFAULT_MAX_REGIONS = 64
DEFAULT_MAX_BYTES = 1 << 30
MAX_NAME_LENGTH = 255  # NAME_MAX, for region names and keys alike


class RegionNotFound(EdgehalError):
    """No region of that name is registered (404, gRPC NOT_FOUND, as Triton answers)."""


class RegionExists(InvalidRequest):
    """A region of that name is already registered (400, gRPC ALREADY_EXISTS, as Triton answers)."""


class CudaSharedMemoryUnsupported(InvalidRequest):
    """A CUDA shared-memory region was offered; this server has no GPU memory to map it into
    (400, gRPC INVALID_ARGUMENT, as a Triton built without GPU support answers)."""


def cuda_unsupported(name: str) -> CudaSharedMemoryUnsupported:
    return CudaSharedMemoryUnsupported(f"CUDA shared memory region {name!r}", "cannot be registered: this server "
                                       "has no CUDA shared memory (GPUs not supported)",
                                       "system shared memory (/v2/systemsharedmemory, SystemSharedMemory*)")


def cuda_region_not_found(name: str) -> RegionNotFound:
    """The status of a named CUDA region: none is ever registered here."""
    return RegionNotFound(f"CUDA shared memory region {name!r}", "is not registered (this server has no CUDA "
                          "shared memory)", "system shared memory (/v2/systemsharedmemory, SystemSharedMemory*)")


@dataclass(frozen=True, slots=True)
class Region:
    """One registered region, as the status routes report it."""

    name: str
    key: str
    offset: int
    byte_size: int

    def status(self) -> dict[str, object]:
        """Triton's status entry: ``{"name", "key", "offset", "byte_size"}``."""
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}


def check_region_name(name: object) -> str:
    """A region name as a client may give it: a non-empty string without ``/`` or control characters."""
    if (not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or "/" in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name)):
        raise InvalidRequest(f"shared memory region name {str(name)[:80]!r}", "is not a valid name",
                             f"1 to {MAX_NAME_LENGTH} characters without '/' or control characters")
    return name


def shm_path(key: object) -> str:
    """The file under /dev/shm that the POSIX shared memory name ``key`` names, or InvalidRequest."""
    what = f"shared memory key {str(key)[:80]!r}"
    expected = "a POSIX shared memory name: '/' then a file name in /dev/shm (no other '/', not '.' or '..')"
    if not isinstance(key, str):
        raise InvalidRequest("shared memory key", f"is a {type(key).__name__}", expected)
    base = key[1:]
    if (not key.startswith("/") or not base or "/" in base or "\0" in key or base in (".", "..")
            or len(base) > MAX_NAME_LENGTH):
        raise InvalidRequest(what, "is not a POSIX shared memory name", expected)
    path = os.path.join(SHM_DIR, base)
    # the name has no '/', so only a link can lead elsewhere; O_NOFOLLOW refuses one swapped in later too
    if os.path.islink(path):
        raise InvalidRequest(what, f"{path} is a symbolic link", "the shared memory file itself")
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(SHM_DIR):
        raise InvalidRequest(what, f"resolves outside {SHM_DIR}", expected)
    return path


def _non_negative(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequest(what, f"is {value!r}", "a non-negative integer")
    return value


class _Open:
    __slots__ = ("region", "fd", "path")

    def __init__(self, region: Region, fd: int, path: str) -> None:
        self.region, self.fd, self.path = region, fd, path


class SharedMemoryRegistry:
    """The registered system shared memory regions of one server; every method is thread-safe.

    ``max_regions`` and ``max_bytes`` bound how many regions may be registered at once and
    the bytes they cover together (``ServerOptions.max_shared_memory_regions`` and
    ``max_shared_memory_bytes``); 0 regions turns shared memory off.
    """

    def __init__(self, *, max_regions: int = DEFAULT_MAX_REGIONS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._lock = threading.Lock()
        self._regions: dict[str, _Open] = {}
        self.max_regions = max_regions
        self.max_bytes = max_bytes

    def set_limits(self, *, max_regions: int, max_bytes: int) -> None:
        """Bound the regions registered from now on (those registered already stay)."""
        with self._lock:
            self.max_regions, self.max_bytes = max_regions, max_bytes

    # -- the extension's three operations ------------------------------------
    def register(self, name: str, *, key: str, offset: int, byte_size: int) -> Region:
        """Open the client's file ``/dev/shm/<key>`` and register ``[offset, offset + byte_size)`` of it
        as ``name``. Refused: a name already registered, a bad key, a range past the end of the file,
        or beyond the limits; nothing is registered then."""
        name = check_region_name(name)
        what = f"shared memory region {name!r}"
        offset = _non_negative(offset, f"{what} offset")
        byte_size = _non_negative(byte_size, f"{what} byte_size")
        if byte_size == 0:
            raise InvalidRequest(f"{what} byte_size", "is 0", "at least 1 byte")
        path = shm_path(key)
        with self._lock:
            if name in self._regions:
                raise RegionExists(what, "is already registered", "unregister it first, or another name")
            if len(self._regions) >= self.max_regions:
                raise InvalidRequest(what, f"would be region {len(self._regions) + 1} of at most {self.max_regions}",
                                     "unregister a region first (the server's max_shared_memory_regions)")
            used = sum(r.region.byte_size for r in self._regions.values())
            if used + byte_size > self.max_bytes:
                raise InvalidRequest(f"{what} byte_size", f"is {byte_size} bytes and {used} are registered already",
                                     f"at most {self.max_bytes} bytes in all (the server's max_shared_memory_bytes)")
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                raise InvalidRequest(f"shared memory key {key!r}", f"{path} does not exist",
                                     "a region the client created (shm_open) before registering it") from None
            except OSError as exc:
                raise InvalidRequest(f"shared memory key {key!r}", f"cannot be opened ({exc.strerror})",
                                     "a shared memory file the server may read and write") from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise InvalidRequest(f"shared memory key {key!r}", f"{path} is not a regular file",
                                         "a POSIX shared memory object")
                if offset + byte_size > st.st_size:
                    raise InvalidRequest(what, f"offset {offset} + byte_size {byte_size} is past the end of "
                                         f"{path} ({st.st_size} bytes)", "a range inside the shared memory file")
            except BaseException:
                os.close(fd)
                raise
            region = Region(name, key, offset, byte_size)
            self._regions[name] = _Open(region, fd, path)
        return region

    def unregister(self, name: str | None = None) -> None:
        """Forget region ``name`` and close its file, or every region when ``name`` is None or empty.
        An unknown name is not an error (as in Triton)."""
        with self._lock:
            if not name:
                closing = list(self._regions.values())
                self._regions.clear()
            else:
                one = self._regions.pop(name, None)
                closing = [one] if one is not None else []
            for r in closing:
                os.close(r.fd)

    def status(self, name: str | None = None) -> list[Region]:
        """Every registered region (name None or empty), or the one named; RegionNotFound if it is not."""
        with self._lock:
            if not name:
                return [r.region for r in self._regions.values()]
            return [self._get(name).region]

    def close(self) -> None:
        """Unregister every region (the server is stopping)."""
        self.unregister(None)

    # -- tensors -------------------------------------------------------------------
    def check(self, name: str, *, offset: int, size: int, what: str) -> None:
        """Raise unless ``[offset, offset + size)`` lies inside registered region ``name``."""
        with self._lock:
            self._bounds(self._get(name), offset, size, what)

    def read(self, name: str, *, offset: int, size: int, what: str = "tensor") -> bytes:
        """A copy of bytes ``[offset, offset + size)`` of region ``name``."""
        with self._lock:
            r = self._get(name)
            self._bounds(r, offset, size, what)
            data = os.pread(r.fd, size, r.region.offset + offset) if size else b""
            if len(data) != size:
                raise InvalidRequest(f"shared memory region {name!r}", f"{r.path} is shorter than when it was "
                                     "registered", "a region file the client keeps at its registered size")
            return data

    def write(self, name: str, *, offset: int, data: bytes | memoryview, what: str = "tensor") -> None:
        """Write ``data`` at ``offset`` of region ``name``; refused, writing nothing, if it does not fit."""
        view = memoryview(data).cast("B")
        with self._lock:
            r = self._get(name)
            self._bounds(r, offset, view.nbytes, what)
            start = r.region.offset + offset
            if os.fstat(r.fd).st_size < start + view.nbytes:  # pwrite would grow the client's file
                raise InvalidRequest(f"shared memory region {name!r}", f"{r.path} is shorter than when it was "
                                     "registered", "a region file the client keeps at its registered size")
            while view.nbytes:
                n = os.pwrite(r.fd, view, start)
                view, start = view[n:], start + n

    def _get(self, name: str) -> _Open:
        r = self._regions.get(name) if isinstance(name, str) else None
        if r is None:
            raise RegionNotFound(f"shared memory region {str(name)[:80]!r}", "is not registered",
                                 f"one of {sorted(self._regions)[:20]}" if self._regions
                                 else "a region registered first (/v2/systemsharedmemory/region/NAME/register)")
        return r

    @staticmethod
    def _bounds(r: _Open, offset: int, size: int, what: str) -> None:
        byte_size = r.region.byte_size
        if offset >= byte_size and size:
            raise InvalidRequest(what, f"shared_memory_offset {offset} is past the end of region "
                                 f"{r.region.name!r} ({byte_size} bytes)", f"an offset below {byte_size}")
        if offset + size > byte_size:
            raise InvalidRequest(what, f"shared_memory_offset {offset} + shared_memory_byte_size {size} is past "
                                 f"the end of region {r.region.name!r} ({byte_size} bytes)",
                                 f"at most {byte_size - offset} bytes from offset {offset}")
