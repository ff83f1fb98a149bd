"""Where a worker's CPU goes: CPU seconds per thread (/proc) and a py-spy profile.

``ThreadCPU`` maps thread ids to the Python thread names (from ``py-spy dump``) and
reads each thread's utime+stime; ``record`` runs ``py-spy record --gil`` (samples only
while a thread holds the GIL, i.e. Python CPU work, not waits) and ``summarise`` folds
its raw output into per-thread and per-function shares. py-spy costs CPU itself:
numbers from a profiled run are for attribution, not for the targets.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def available() -> bool:
    return shutil.which("py-spy") is not None


def _thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds per thread id."""
    out: dict[int, tuple[float, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(tid)] = (int(fields[11]) / TICK, int(fields[12]) / TICK)
    return out


def _thread_names(pid: int) -> dict[int, str]:
    dump = subprocess.run(
        ["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
    ).stdout
    return {
        int(m.group(1)): m.group(2) for m in re.finditer(r'Thread (\d+) \([^)]*\): "([^"]+)"', dump)
    }


def _group(name: str) -> str:
    return re.sub(r"_\d+$", " (pool)", name)


class ThreadCPU:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.names = _thread_names(pid)
        self.before = _thread_cpu(pid)

    def stop(self) -> dict[str, dict[str, float]]:
        """Per thread group: user and system CPU seconds since construction."""
        after = _thread_cpu(self.pid)
        self.names.update(_thread_names(self.pid))
        user: collections.Counter[str] = collections.Counter()
        system: collections.Counter[str] = collections.Counter()
        for tid, (u, s) in after.items():
            name = _group(self.names.get(tid, "native/unnamed"))
            u0, s0 = self.before.get(tid, (0.0, 0.0))
            user[name] += u - u0
            system[name] += s - s0
        return {
            name: {"user": user[name], "system": system[name]}
            for name in sorted(user, key=lambda n: -(user[n] + system[n]))
        }


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "100",
            "--gil",
            "--threads",
            "--format",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def summarise(path: Path, top: int = 200) -> dict[str, list[tuple[str, float]]]:
    """Shares of GIL-holding samples: by thread, by function (self), by function (total)."""
    threads: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total_incl: collections.Counter[str] = collections.Counter()
    n_all = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        n_all += n
        frames = stack.split(";")
        thread = re.sub(r"^thread \(0x[0-9a-f]+\): |^thread \(\d+\): ", "", frames[0])
        thread = _group(thread.strip('"'))
        threads[thread] += n
        clean = [re.sub(r":\d+\)", ")", f) for f in frames[1:]]
        if clean:
            leaf[f"{clean[-1]}  [{thread}]"] += n
        for fn in set(clean):
            total_incl[f"{fn}  [{thread}]"] += n
    if not n_all:
        return {}
    share = lambda c: [(k, v / n_all) for k, v in c.most_common(top)]  # noqa: E731
    return {
        "threads": share(threads),
        "self": share(leaf),
        "total": share(total_incl),
        "samples": [("samples", float(n_all))],
    }
