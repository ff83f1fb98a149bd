"""The deployment files: Kubernetes manifests against real schemas, compose file shape."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ..conftest import ROOT


def validate_edited(
    tmp_path: Path, file: str, old: str, new: str
) -> subprocess.CompletedProcess[str]:
    """``docker/k8s/validate.py`` on a copy of the manifests with one edit in ``file``."""
    copy = tmp_path / "k8s"
    shutil.copytree(ROOT / "docker" / "k8s", copy)
    edited = copy / file
    edited.write_text(edited.read_text().replace(old, new))
    return subprocess.run(
        [sys.executable, str(ROOT / "docker/k8s/validate.py"), "--dir", str(copy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_kubernetes_manifests_validate_and_carry_the_current_policy():
    result = subprocess.run(
        [sys.executable, "docker/k8s/validate.py", "--require-default-policy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout


def test_validation_fails_on_a_broken_manifest(tmp_path):
    result = validate_edited(tmp_path, "deployment.yaml", "livenessProbe", "livenesProbe")
    assert result.returncode == 1


def test_compose_file_runs_rabbitmq_redis_and_a_scalable_worker():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"rabbitmq", "redis", "worker"} <= set(services)
    assert "ports" not in services["worker"]  # so --scale worker=N works
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert 'CMD ["celery", "-A", "worker", "worker"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile and "USER" in dockerfile
    assert any("llm" in (s.get("profiles") or []) for s in services.values())


def test_autoscaling_watches_every_queue_the_worker_consumes(tmp_path):
    import importlib.util

    from worker.settings import Settings

    spec = importlib.util.spec_from_file_location("k8s_validate", ROOT / "docker/k8s/validate.py")
    assert spec and spec.loader
    validate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(validate)
    defaults = Settings()
    assert {defaults.requests_queue, defaults.deferred_queue} == validate.CONSUMED_QUEUES

    result = validate_edited(
        tmp_path, "keda.yaml", "queueName: moderation.deferred", "queueName: moderation.other"
    )
    assert result.returncode == 1
    assert "no rabbitmq trigger on 'moderation.deferred'" in result.stdout
