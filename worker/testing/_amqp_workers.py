"""Real worker processes (``celery -A worker worker``), as a pod would run them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TypedDict, Unpack

SOURCE = Path(__file__).resolve().parents[2]  # the tree this ``worker`` package is in


def spawn(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path = SOURCE, group: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr appended to ``log``; ``group``: in a process
    group of its own, so that ``terminate`` takes its children (a prefork pool) too."""
    with log.open("ab") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=group
        )


def send(proc: subprocess.Popen[bytes], sig: int, group: bool = False) -> None:
    """``sig`` to the process (or its whole group), if there is still one to signal."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, sig)
        elif proc.poll() is None:
            proc.send_signal(sig)


def terminate(
    proc: subprocess.Popen[bytes], timeout: float = 40.0, group: bool = False
) -> int | None:
    """SIGTERM, up to ``timeout`` s for a graceful exit, then SIGKILL; the exit code.

    A group leader that is gone already may have left members: they get SIGKILL.
    """
    if proc.poll() is None:
        send(proc, signal.SIGTERM, group)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            send(proc, signal.SIGKILL, group)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    elif group:
        send(proc, signal.SIGKILL, group)
    return proc.returncode


class WorkerOptions(TypedDict, total=False):
    name: str  # of the Celery node, the health file and the log ("test")
    loglevel: str | None  # celery's -l ("INFO"; None: celery's own, warnings)
    cwd: Path  # the source tree to run (SOURCE; the benchmark's A/B runs another)
    group: bool  # a process group of its own, signalled whole (False)


class WorkerProcess:
    """One ``celery -A worker worker``: ready when it writes its health file (the
    liveness probe's), its output in a log file of its own under ``log_dir``."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        *,
        name: str = "test",
        loglevel: str | None = "INFO",
        cwd: Path = SOURCE,
        group: bool = False,
    ) -> None:
        tag = uuid.uuid4().hex[:6]
        self.env, self.cwd, self.group, self.loglevel = env, cwd, group, loglevel
        self.name = f"{name}-{tag}@%h"
        self.health = log_dir / f"{name}-{tag}.alive"
        self.log = log_dir / f"{name}-{tag}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, wait: bool = True, timeout: float = 30.0) -> WorkerProcess:
        self.health.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-n", self.name]
        cmd += ["--without-mingle", "--without-gossip"]
        if self.loglevel:
            cmd += ["-l", self.loglevel]
        env = {**self.env, "MODERATION_HEALTH_FILE": str(self.health)}
        self.proc = spawn(cmd, env, self.log, self.cwd, self.group)
        if wait:
            self.wait_ready(timeout)
        return self

    def ready(self) -> bool:
        """Health file written; raises if the process has exited instead."""
        if self.health.exists():
            return True
        assert self.proc is not None, "not started"
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited: {self.output()[-3000:]}")
        return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready: {self.output()[-3000:]}")
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            send(self.proc, sig, self.group)

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM (the worker finishes in-flight work), SIGKILL after ``timeout``."""
        return None if self.proc is None else terminate(self.proc, timeout, self.group)


class WorkerLauncher:
    """Starts workers with one environment (each may add to it) and stops them all."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, **options: Unpack[WorkerOptions]
    ) -> None:
        """``options``: ``WorkerProcess``'s, for every worker started."""
        self.env, self.log_dir, self.options = env, log_dir, options
        self.started: list[WorkerProcess] = []

    def start(self, wait: bool = True, **env: str) -> WorkerProcess:
        worker = WorkerProcess({**self.env, **env}, self.log_dir, **self.options)
        self.started.append(worker)
        return worker.start(wait=wait)

    def start_many(self, count: int, timeout: float = 60.0, **env: str) -> list[WorkerProcess]:
        """``count`` workers started together, then waited for (``timeout`` for all)."""
        workers = [self.start(wait=False, **env) for _ in range(count)]
        deadline = time.monotonic() + timeout
        while not all([w.ready() for w in workers]):  # a list: every exit is noticed
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not ready after {timeout:g} s")
            time.sleep(0.1)
        return workers

    def stop_all(self, timeout: float = 40.0) -> None:
        for worker in self.started:
            worker.stop(timeout)
        self.started.clear()

    def __enter__(self) -> WorkerLauncher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
