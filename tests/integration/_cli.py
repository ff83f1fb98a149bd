"""``python -m worker ...`` in a subprocess, as a user runs it: from the repository,
with none of the caller's ``MODERATION_*``/``OPENAI_*`` settings unless given."""

from __future__ import annotations

import os
import subprocess
import sys

from ..conftest import ROOT


def run_cli(
    args: list[str], stdin: str | None = None, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MODERATION_"))}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=timeout,
    )
