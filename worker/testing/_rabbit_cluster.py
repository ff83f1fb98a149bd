"""A RabbitMQ cluster of our own on this machine: N ``rabbitmq-server`` nodes with their
own node names, ports and data directories, joined with ``rabbitmqctl join_cluster``.

Nodes run as the current user from RabbitMQ's own scripts (``/usr/lib/rabbitmq/bin``),
not Debian's ``/usr/sbin`` wrappers, which switch to the ``rabbitmq`` user and its
Erlang cookie: the cluster shares a cookie of its own in its base directory (its HOME),
and the machine's broker on 5672 is never touched. Loopback only.

``kill(n)`` is ``kill -9`` of the node's Erlang VM (what a crashed host looks like to its
peers: the distribution links drop at once); ``start(n)`` brings it back with its data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path("/usr/lib/rabbitmq/bin")
COOKIE = "MODERATIONTESTCLUSTERCOOKIE"


def unavailable() -> str | None:
    """Why a cluster cannot run here (None: it can)."""
    if not (SCRIPTS / "rabbitmq-server").exists():
        return f"no RabbitMQ server scripts in {SCRIPTS} (Debian's rabbitmq-server package)"
    if shutil.which("erl") is None and not Path("/usr/lib/erlang/bin/erl").exists():
        return "no Erlang runtime"
    return None


@dataclass(frozen=True)
class Node:
    index: int  # 1-based
    port: int

    @property
    def name(self) -> str:
        return f"moderation{self.index}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"


class RabbitCluster:
    """``size`` nodes on ports ``base_port + 1 ...``; a context manager that starts and
    joins them, and kills them afterwards. ``size=1``: a broker of one's own, for a
    configuration the machine's broker does not have (a TLS listener)."""

    def __init__(
        self, base: Path, size: int = 3, base_port: int = 5680, extra_config: str = ""
    ) -> None:
        self.base = base
        self.extra_config = extra_config  # rabbitmq.conf lines for every node (TLS, ...)
        self.nodes = [Node(i, base_port + i) for i in range(1, size + 1)]
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # -- the nodes ------------------------------------------------------------------------

    def _dir(self, node: Node) -> Path:
        return self.base / f"n{node.index}"

    def _env(self, node: Node) -> dict[str, str]:
        folder = self._dir(node)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            HOME=str(self.base),  # the cluster's own .erlang.cookie
            RABBITMQ_NODENAME=node.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(node.port),
            RABBITMQ_DIST_PORT=str(node.port + 20000),
            RABBITMQ_CONFIG_FILE=str(folder / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(folder / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(folder / "rabbitmq-env.conf"),
            RABBITMQ_MNESIA_BASE=str(folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(folder / "log"),
            RABBITMQ_PID_FILE=str(folder / "pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_CRASH_DUMP=str(folder / "erl_crash.dump"),  # not in the caller's directory
            ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _prepare(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        cookie = self.base / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(COOKIE)
            cookie.chmod(0o400)
        for node in self.nodes:
            folder = self._dir(node)
            folder.mkdir(exist_ok=True)
            (folder / "rabbitmq.conf").write_text(
                f"listeners.tcp.local = 127.0.0.1:{node.port}\n"
                "loopback_users = none\n"
                # a killed peer is noticed by its dropped links at once; this is the
                # fallback for one that hangs
                "cluster_partition_handling = pause_minority\n" + self.extra_config
            )
            (folder / "enabled_plugins").write_text("[].\n")
            (folder / "rabbitmq-env.conf").write_text("")

    def ctl(
        self, node: Node, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n NODE ARGS`` with the cluster's cookie."""
        return subprocess.run(
            [str(SCRIPTS / "rabbitmqctl"), "-q", "-n", node.name, *args],
            env=self._env(node),
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, node: Node, timeout: float = 90.0) -> None:
        """Start ``node`` (again, with its data) and wait until it serves AMQP."""
        log = (self._dir(node) / "server.log").open("ab")
        self._procs[node.index] = subprocess.Popen(
            [str(SCRIPTS / "rabbitmq-server")],
            env=self._env(node),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        proc, deadline = self._procs[node.index], time.monotonic() + timeout
        while self.ctl(node, "await_startup", check=False, timeout=timeout).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (self._dir(node) / "server.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{node.name} did not start:\n{tail}")
            time.sleep(0.5)

    def kill(self, node: Node) -> None:
        """``kill -9`` of the node's Erlang VM."""
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int((self._dir(node) / "pid").read_text().strip()), signal.SIGKILL)
        proc = self._procs.pop(node.index, None)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        (self._dir(node) / "pid").unlink(missing_ok=True)

    def join(self, node: Node, to: Node) -> None:
        self.ctl(node, "stop_app")
        self.ctl(node, "join_cluster", to.name)
        self.ctl(node, "start_app")

    # -- what the cluster says -------------------------------------------------------------

    def running(self, via: Node) -> list[str]:
        out = self.ctl(via, "eval", "rabbit_nodes:all_running().").stdout
        return sorted(n.strip(" []'\n") for n in out.split(",") if n.strip(" []'\n"))

    def quorum_members(self, queue: str, via: Node) -> tuple[str | None, list[str]]:
        """(leader, members) of a quorum queue, as ``list_queues`` reports them."""
        out = self.ctl(via, "list_queues", "name", "leader", "members", "--formatter", "json")
        import json

        for row in json.loads(out.stdout or "[]"):
            if row.get("name") == queue:
                return row.get("leader"), sorted(row.get("members") or [])
        return None, []

    def node_named(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def urls(self) -> str:
        """All nodes in kombu's failover syntax (``amqp://a;amqp://b;...``)."""
        return ";".join(n.url for n in self.nodes)

    # -- the whole ------------------------------------------------------------------------

    def __enter__(self) -> RabbitCluster:
        self._prepare()
        first, *others = self.nodes
        try:
            self.start(first)
            for node in others:
                self.start(node)
                self.join(node, first)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Kill every node (their data goes with the base directory)."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self.kill(node)
        for proc in self._procs.values():
            with contextlib.suppress(Exception):
                os.killpg(proc.pid, signal.SIGKILL)
        self._procs.clear()
        time.sleep(0.2)
