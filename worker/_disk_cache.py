"""What every start would otherwise rebuild, kept on disk: compiled Hyperscan databases
and the character tables the rules are built from (seconds of CPU, the same each time).

A file is used only when everything it came from is the same: its key (say, a
database's patterns) and a fingerprint of what built it (this package's source, the
versions of Python, its Unicode data, Hyperscan and the confusables list, the machine).
Never trusted blindly: each file carries the SHA-256 of its payload, and one that is
cut short, altered, or from another build (Hyperscan's own check refuses a database
for another platform) is rebuilt and replaced. A cache that cannot be written is only
slower: the work is done as without it.

Off until ``configure`` names a directory (``build_pipeline`` does, from
``MODERATION_CACHE_DIR``), so tests and library use never touch the disk unasked.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
import tempfile
import threading
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import structlog

log = structlog.get_logger("worker.cache")

T = TypeVar("T")

_MAGIC = b"MODCACHE1\n"
_DIGEST = hashlib.sha256().digest_size
_DISTRIBUTIONS = ("hyperscan", "confusable-homoglyphs")

_directory: Path | None = None
_warned = threading.Event()


def configure(directory: Path | None) -> None:
    """Use ``directory`` for the cache (created when needed); None turns it off."""
    global _directory
    _directory = directory


def directory() -> Path | None:
    return _directory


@lru_cache(maxsize=2)
def fingerprint(code: bool) -> bytes:
    """What built the cached things: a change to any of it means a rebuild. ``code``:
    this package's source too (for what our code computes, not for what a key says
    in full, such as a database's patterns)."""
    digest = hashlib.sha256()
    for part in (sys.version, unicodedata.unidata_version, platform.machine()):
        digest.update(part.encode() + b"\0")
    for name in _DISTRIBUTIONS:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{name}={version}\0".encode())
    if code:
        package = Path(__file__).resolve().parent
        for source in sorted(package.rglob("*.py")):
            digest.update(source.relative_to(package).as_posix().encode() + b"\0")
            digest.update(source.read_bytes())
    return digest.digest()


def cached(
    kind: str,
    key: bytes,
    build: Callable[[], T],
    dump: Callable[[T], bytes],
    load: Callable[[bytes], T],
    code: bool = True,
) -> T:
    """``load`` of the stored bytes for (``kind``, ``key``), or ``build()``, stored.
    ``code=False`` when ``key`` alone says what ``build`` makes."""
    folder = _directory
    if folder is None:
        return build()
    name = hashlib.sha256(fingerprint(code) + kind.encode() + b"\0" + key).hexdigest()[:40]
    path = folder / f"{kind}-{name}.bin"
    reason = _read(path, load)
    if not isinstance(reason, str):
        return reason
    value = build()
    if reason != "missing":
        log.warning("disk_cache_rebuilt", kind=kind, file=path.name, reason=reason)
    _write(path, dump(value))
    return value


def _read(path: Path, load: Callable[[bytes], T]) -> T | str:
    """The loaded value, or why there is none (a string)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    head = len(_MAGIC)
    if not data.startswith(_MAGIC) or len(data) < head + _DIGEST:
        return "not a cache file"
    digest, payload = data[head : head + _DIGEST], data[head + _DIGEST :]
    if hashlib.sha256(payload).digest() != digest:
        return "checksum mismatch"
    try:
        return load(payload)
    except Exception as exc:  # e.g. Hyperscan: a database for another platform
        return f"refused: {type(exc).__name__}"


def _write(path: Path, payload: bytes) -> None:
    """Atomically (a reader sees the old file or the new one, never half of one)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        if not _warned.is_set():
            _warned.set()
            log.warning("disk_cache_unwritable", directory=str(path.parent), error=exc.strerror)
