"""The policy in force, reloaded when its file changes.

The store reads the file (``worker._policy_file``) and compiles it
(``worker._policy_compile``) at start, and again whenever the file's modification time
or size changes. ``current`` looks at the file at most every ``check_every_s`` and
compiles a changed one on a thread of its own, so the thread consuming messages never
waits for a compile (seconds, for a large policy).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import structlog

from worker._policy_compile import Policy, compile_policy
from worker._policy_file import PolicyError, read_policy

log = structlog.get_logger("worker.policy")


class PolicyStore:
    """Holds the current policy and swaps in a new one when the file changes.

    A broken edit never takes a worker down: the error is logged and the last good
    policy stays in force.
    """

    def __init__(self, path: Path, check_every_s: float = 2.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self._policy = self._load()
        self._stamp = self._file_stamp()
        self._next_check = time.monotonic() + check_every_s
        self._lock = threading.Lock()
        self._loader: threading.Thread | None = None

    def _load(self) -> Policy:
        return compile_policy(read_policy(self.path))

    def _file_stamp(self) -> tuple[float, int]:
        try:
            stat = self.path.stat()
        except OSError:
            return (0.0, -1)
        return (stat.st_mtime, stat.st_size)

    @property
    def current(self) -> Policy:
        now = time.monotonic()
        if now >= self._next_check and self._lock.acquire(blocking=False):
            try:
                self._next_check = now + self.check_every_s
                stamp = self._file_stamp()
                if stamp != self._stamp and not (self._loader and self._loader.is_alive()):
                    # Compiling a large policy takes seconds: never on the caller's
                    # thread, which is the one consuming messages.
                    self._stamp = stamp
                    self._loader = threading.Thread(
                        target=self._reload, name="policy-reload", daemon=True
                    )
                    self._loader.start()
            finally:
                self._lock.release()
        return self._policy

    def settle(self, timeout: float = 60.0) -> None:
        """Wait for a reload in progress (tests, and the embedded command)."""
        loader = self._loader
        if loader is not None:
            loader.join(timeout)

    def _reload(self) -> None:
        try:
            policy = self._load()
        except PolicyError as exc:
            log.error("policy_reload_failed", error=str(exc), kept=self._policy.version)
            return
        if policy.version != self._policy.version:
            log.info("policy_reloaded", old=self._policy.version, new=policy.version)
            self._policy = policy
