"""The on-disk cache of compiled things: used when intact, rebuilt when not."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from worker import _disk_cache
from worker._prescreen_build import Database


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    _disk_cache.configure(tmp_path / "cache")
    yield tmp_path / "cache"
    _disk_cache.configure(None)


class Counter:
    def __init__(self, value: bytes = b"built") -> None:
        self.value = value
        self.builds = 0

    def build(self) -> bytes:
        self.builds += 1
        return self.value


def _get(counter: Counter, key: bytes = b"k") -> bytes:
    return _disk_cache.cached("test", key, counter.build, bytes, bytes)


def _only_file(directory: Path) -> Path:
    (path,) = directory.glob("test-*.bin")
    return path


def test_off_unless_configured(tmp_path: Path) -> None:
    _disk_cache.configure(None)
    counter = Counter()
    assert _get(counter) == _get(counter) == b"built"
    assert counter.builds == 2


def test_built_once_then_loaded(cache_dir: Path) -> None:
    counter = Counter()
    assert _get(counter) == b"built"
    assert _get(counter) == b"built"
    assert counter.builds == 1
    assert _get(counter, key=b"other") == b"built" and counter.builds == 2  # its own file


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum mismatch"),
        (lambda data: data[: len(data) // 2], "checksum mismatch"),
        (lambda data: b"something else entirely", "not a cache file"),
        (lambda data: b"", "not a cache file"),
    ],
    ids=["one bit", "cut short", "foreign", "empty"],
)
def test_a_damaged_file_is_rebuilt_and_replaced(cache_dir: Path, damage, reason) -> None:
    counter = Counter(b"x" * 100)
    _get(counter)
    path = _only_file(cache_dir)
    path.write_bytes(damage(path.read_bytes()))
    with structlog.testing.capture_logs() as logs:
        assert _get(counter) == b"x" * 100
    assert counter.builds == 2
    assert [(e["event"], e["reason"]) for e in logs] == [("disk_cache_rebuilt", reason)]
    assert _get(counter) == b"x" * 100 and counter.builds == 2  # the new file is good


def test_a_payload_the_loader_refuses_is_rebuilt(cache_dir: Path) -> None:
    counter = Counter()
    _get(counter)

    def refuse(data: bytes) -> bytes:
        raise ValueError("for another platform")

    with structlog.testing.capture_logs() as logs:
        assert _disk_cache.cached("test", b"k", counter.build, bytes, refuse) == b"built"
    assert counter.builds == 2
    assert logs[0]["reason"] == "refused: ValueError"


def test_an_unwritable_directory_only_costs_the_build(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    _disk_cache.configure(blocker / "cache")
    try:
        counter = Counter()
        assert _get(counter) == _get(counter) == b"built"
        assert counter.builds == 2
    finally:
        _disk_cache.configure(None)


def _forge(path: Path, payload: bytes) -> None:
    """A file with a valid checksum around ``payload``: only the loader can refuse it."""
    path.write_bytes(b"MODCACHE1\n" + hashlib.sha256(payload).digest() + payload)


def test_hyperscan_databases_round_trip_and_refuse_garbage(cache_dir: Path) -> None:
    patterns = [("fo+bar", False), ("ba[zr]", True)]
    first = Database(patterns)
    (path,) = cache_dir.glob("hyperscan-*.bin")
    stored = path.read_bytes()
    loaded = Database(patterns)  # from the file
    assert path.read_bytes() == stored
    for database in (first, loaded):
        assert database.scan(b"a fooobar here") and database.scan(b"baz")
        assert not database.scan(b"nothing to see")
    _forge(path, b"\x00" * 64)  # checksum fine, not a database
    with structlog.testing.capture_logs() as logs:
        rebuilt = Database(patterns)
    assert logs and logs[0]["reason"].startswith("refused")
    assert rebuilt.scan(b"fooobar") and path.read_bytes() != b""
    assert Database([("other", False)]).scan(b"another") and len(list(cache_dir.glob("*"))) == 2
