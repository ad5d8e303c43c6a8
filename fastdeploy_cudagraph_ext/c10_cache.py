"""A per-user cache of c10 probe verdicts that nobody else can write, one prober per machine, and
what a verdict is keyed by: the library's content (its ELF build id, else a hash of the file).

Only the current user's own, not group/world-writable directory and file are read (a planted file
is ignored with a log line); files are opened without following symlinks. An exclusive file lock
around look-up, probe and write makes the first worker on a machine probe while the others wait
for its verdict. Where no safe directory exists (HOME unset and no passwd entry, or a fallback
taken by another user) there is simply no cache: probing again is always correct.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import stat
import struct
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

CACHE_ENV = "FD_CUDAGRAPH_EXT_CACHE_DIR"
FILE_NAME = "c10_bridge.json"
LOCK_NAME = "c10_bridge.lock"
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """$FD_CUDAGRAPH_EXT_CACHE_DIR, else ~/.cache/fastdeploy_cudagraph_ext, else a per-uid folder in the temp dir."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    try:
        return Path.home() / ".cache" / "fastdeploy_cudagraph_ext"
    except (RuntimeError, KeyError):  # HOME unset and no passwd entry for this uid (containers)
        fallback = Path(tempfile.gettempdir()) / f"fastdeploy_cudagraph_ext-{os.getuid()}"
        _log_once(f"no home directory for uid {os.getuid()}: c10 verdict cache in {fallback} (set {CACHE_ENV} to choose)")
        return fallback


@functools.lru_cache(maxsize=None)
def _log_once(message: str) -> None:
    log.warning(message)


def untrusted(st: os.stat_result) -> str:
    """Why a cache file or directory with this status must not be believed ('' if it may)."""
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group- or world-writable (mode {stat.S_IMODE(st.st_mode):o})"
    return ""


class VerdictCache:
    """JSON entries by key in one file of a trusted directory; used only while its lock is held."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME

    def read(self) -> dict[str, object]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("ignoring the c10 verdict cache %s (%s): probing afresh", self.path, exc.strerror or exc)
            return {}
        with os.fdopen(fd, "rb") as fh:
            why = untrusted(os.fstat(fh.fileno()))
            if why:
                log.warning("ignoring the c10 verdict cache %s: %s; probing afresh", self.path, why)
                return {}
            try:
                data = json.loads(fh.read().decode("utf-8"))
            except ValueError:
                log.warning("ignoring the c10 verdict cache %s: not valid JSON; probing afresh", self.path)
                return {}
        return data if isinstance(data, dict) else {}

    def write(self, key: str, entry: dict[str, object]) -> None:
        data = self.read()
        data[key] = entry
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".c10_bridge.", suffix=".json")  # mode 0600
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not write the c10 verdict cache %s: %s", self.path, exc.strerror or exc)


_ELF_MAGIC = b"\x7fELF"
_PT_NOTE = 4
_NT_GNU_BUILD_ID = 3
_HASH_CHUNK = 1 << 20


def _elf_build_id(fh: BinaryIO) -> str | None:
    """The GNU build id among the notes of a 64-bit little-endian ELF file (x86-64, aarch64), or None: another
    file, or one linked without a build id (such files are hashed instead)."""
    head = fh.read(64)
    if len(head) < 64 or head[:6] != _ELF_MAGIC + b"\x02\x01":  # ELFCLASS64, ELFDATA2LSB
        return None
    phoff, = struct.unpack_from("<Q", head, 32)
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    for index in range(phnum):
        fh.seek(phoff + index * phentsize)
        entry = fh.read(56)
        if len(entry) < 56:
            return None
        p_type, _, offset, _, _, size, _, align = struct.unpack("<IIQQQQQQ", entry)
        if p_type != _PT_NOTE:
            continue
        fh.seek(offset)
        notes, pad = fh.read(size), max(4, align)
        at = 0
        while at + 12 <= len(notes):
            namesz, descsz, n_type = struct.unpack_from("<III", notes, at)
            desc_at = at + 12 + -(-namesz // pad) * pad
            if n_type == _NT_GNU_BUILD_ID and notes[at + 12 : at + 12 + namesz] == b"GNU\0" and descsz:
                return notes[desc_at : desc_at + descsz].hex()
            at = desc_at + -(-descsz // pad) * pad
    return None


def _content_identity(path: str) -> str:
    with open(path, "rb") as fh:
        build_id = _elf_build_id(fh)
        if build_id:
            return f"build-id:{build_id}"
        fh.seek(0)
        digest = hashlib.sha256()
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"


_identities: dict[tuple, str] = {}
_identities_lock = threading.Lock()


def library_identity(path: str) -> str:
    """What a library's verdict is keyed by: its ELF build id, else a SHA-256 of the file; computed once per
    process for each path, inode, size, mtime and ctime (ctime moves on any rewrite, even one that puts the
    size and mtime back, so a library replaced in place is read again)."""
    st = os.stat(path)
    seen = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _identities_lock:
        identity = _identities.get(seen)
        if identity is None:
            identity = _identities[seen] = _content_identity(path)
    return identity


@contextmanager
def locked_cache() -> Iterator[VerdictCache | None]:
    """The cache with this machine's probe lock held, or None (no safe place: probe without a cache)."""
    directory = cache_dir()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        why = untrusted(os.stat(directory))
        lock_fd = None if why else os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        why = exc.strerror or str(exc)
    if why:
        log.warning("not using the c10 verdict cache directory %s: %s; probing without a cache (set %s)",
                    directory, why, CACHE_ENV)
        yield None
        return
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # released when this worker is done, or dies
        yield VerdictCache(directory)
    finally:
        os.close(lock_fd)
