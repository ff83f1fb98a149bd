#!/usr/bin/env python3
"""Validate the manifests of docker/k8s without a cluster.

    python -m pip install -r docker/k8s/requirements.txt      # kubernetes-validate (+ jsonschema)
    python docker/k8s/validate.py                           # exit 0 = all good
    python docker/k8s/validate.py --write-policy-configmap  # refresh policy-configmap.yaml

Three layers, every one of which fails the run (exit 1) on an error:

1. Built-in kinds (Deployment, ConfigMap, Secret, PodDisruptionBudget, Namespace, ...) against
   the real Kubernetes OpenAPI-derived JSON schemas bundled in the ``kubernetes-validate``
   package, in strict mode (unknown fields are errors), for each ``--k8s-version``.
2. KEDA objects (``keda.sh/v1alpha1`` ScaledObject, TriggerAuthentication) against
   ``keda.schema.json`` beside this file (written from KEDA's CRD / scaler docs).
3. Cross-references a schema cannot see: every ConfigMap/Secret/key a pod or KEDA refers to
   exists, selectors match the pod labels, the policy file is where MODERATION_POLICY points
   and (when the ``worker`` package is importable) loads with the worker's own policy loader,
   the scrape annotation names a container port, the kustomize image name is used.

Only what kustomization.yaml lists is validated (that is what ``kubectl apply -k`` applies).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_VERSIONS = ["1.28.0", "1.33.0"]
REQUIRE_DEFAULT_POLICY = False

try:
    import jsonschema
    import kubernetes_validate
    import kubernetes_validate.utils
    import yaml
except ImportError as exc:  # pragma: no cover - environment problem, not a manifest problem
    sys.exit(
        f"validate.py: missing dependency ({exc.name}); "
        f"python -m pip install -r {HERE / 'requirements.txt'}"
    )


class Report:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.notes: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"ERROR {where}: {message}")
        print(self.errors[-1])

    def ok(self, where: str, message: str) -> None:
        print(f"ok    {where}: {message}")

    def note(self, where: str, message: str) -> None:
        self.notes.append(f"note  {where}: {message}")
        print(self.notes[-1])


# The queues a worker consumes (worker/settings.py defaults): a backlog on either means
# more replicas would help, so each needs a KEDA trigger.
CONSUMED_QUEUES = {"moderation.requests", "moderation.deferred"}


def name_of(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def load_documents(
    kustomization: Path, report: Report
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    kust = yaml.safe_load(kustomization.read_text())
    where = kustomization.name
    allowed = {
        "apiVersion",
        "kind",
        "namespace",
        "resources",
        "images",
        "labels",
        "commonLabels",
        "commonAnnotations",
        "configMapGenerator",
        "secretGenerator",
        "generatorOptions",
        "patches",
        "namePrefix",
        "nameSuffix",
        "replicas",
        "components",
    }
    if not isinstance(kust, dict):
        report.error(where, "not a mapping")
        return [], {}
    for key in sorted(set(kust) - allowed):
        report.error(where, f"unknown field {key!r}")
    if kust.get("kind", "Kustomization") != "Kustomization":
        report.error(where, f"kind is {kust.get('kind')!r}")
    docs: list[tuple[str, dict[str, Any]]] = []
    for entry in kust.get("resources") or []:
        path = kustomization.parent / entry
        if not path.is_file():
            report.error(where, f"resource {entry!r} does not exist")
            continue
        try:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc is None:
                    continue
                if not isinstance(doc, dict):
                    report.error(entry, "a document is not a mapping")
                    continue
                docs.append((entry, doc))
        except yaml.YAMLError as exc:
            report.error(entry, f"YAML: {exc}")
    namespace = kust.get("namespace")
    return [(f, _with_namespace(d, namespace)) for f, d in docs], kust


def _with_namespace(doc: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    if namespace and doc.get("kind") != "Namespace":
        doc.setdefault("metadata", {}).setdefault("namespace", namespace)
    return doc


# ---------------------------------------------------------------- schema layers


def validate_builtin(file: str, obj: dict[str, Any], versions: list[str], report: Report) -> None:
    where = f"{file} {name_of(obj)}"
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(root)"
            report.error(where, f"k8s {exc.version}: {path}: {exc.message}")
            return
        except kubernetes_validate.SchemaNotFoundError as exc:
            report.error(where, exc.message)
            return
        except kubernetes_validate.utils.VersionNotSupportedError:
            report.error(where, f"kubernetes-validate has no schemas for {version}")
            return
    checked = ", ".join(v.rsplit(".", 1)[0] for v in versions)
    report.ok(where, f"Kubernetes schema (strict) {checked}")


def validate_keda(file: str, obj: dict[str, Any], schema: dict[str, Any], report: Report) -> None:
    where = f"{file} {name_of(obj)}"
    kind = obj.get("kind")
    if kind not in schema["$defs"] or not kind[:1].isupper():
        report.error(where, f"no KEDA schema for kind {kind!r} (keda.schema.json)")
        return
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{kind}", "$defs": schema["$defs"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    errors = sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    seen: set[str] = set()
    for err in errors:
        path = ".".join(str(p) for p in err.absolute_path) or "(root)"
        message = f"KEDA schema: {path}: {err.message}"
        if message not in seen:  # the same fault can break two subschemas
            seen.add(message)
            report.error(where, message)
    if not errors:
        report.ok(where, "KEDA schema (keda.schema.json)")


# ---------------------------------------------------------------- cross-references


def cross_check(
    docs: list[tuple[str, dict[str, Any]]], kust: dict[str, Any], report: Report
) -> None:
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for _, obj in docs:
        by_kind.setdefault(obj.get("kind", ""), {})[(obj.get("metadata") or {}).get("name")] = obj

    def data_keys(kind: str, name: str) -> set[str] | None:
        obj = by_kind.get(kind, {}).get(name)
        if obj is None:
            return None
        return (
            set(obj.get("data") or {})
            | set(obj.get("stringData") or {})
            | set(obj.get("binaryData") or {})
        )

    def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        wanted = selector.get("matchLabels") or {}
        return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())

    images_used: set[str] = set()
    for name, dep in by_kind.get("Deployment", {}).items():
        where = f"Deployment/{name}"
        spec = dep.get("spec") or {}
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        pod = template.get("spec") or {}
        if not matches(spec.get("selector") or {}, labels):
            report.error(where, "spec.selector does not match the pod template labels")
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        ports: set[int] = set()
        for c in pod.get("containers") or []:
            cwhere = f"{where} container {c.get('name')}"
            images_used.add(str(c.get("image", "")).rsplit(":", 1)[0])
            ports |= {p.get("containerPort") for p in c.get("ports") or []}
            for src in c.get("envFrom") or []:
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    ref = src.get(key)
                    if ref and not ref.get("optional") and data_keys(kind, ref.get("name")) is None:
                        report.error(cwhere, f"envFrom {kind} {ref.get('name')!r} is not defined")
            env = {e.get("name"): e for e in c.get("env") or []}
            for e in env.values():
                vf = e.get("valueFrom") or {}
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = vf.get(key)
                    if ref and not ref.get("optional"):
                        keys = data_keys(kind, ref.get("name"))
                        if keys is None or ref.get("key") not in keys:
                            report.error(
                                cwhere,
                                f"env {e.get('name')}: {kind} "
                                f"{ref.get('name')}/{ref.get('key')} is not defined",
                            )
            mounts = {m.get("mountPath"): m for m in c.get("volumeMounts") or []}
            for path, m in mounts.items():
                if m.get("name") not in volumes:
                    report.error(cwhere, f"volumeMount {path}: undefined volume {m.get('name')!r}")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe not in c:
                    report.note(cwhere, f"no {probe}")
            # The policy file: MODERATION_POLICY -> a ConfigMap volume item -> loadable policy.
            policy_env = env.get("MODERATION_POLICY", {}).get("value")
            if policy_env:
                check_policy_mount(cwhere, policy_env, mounts, volumes, by_kind, report)
        for vname, vol in volumes.items():
            cm = vol.get("configMap")
            if cm and not cm.get("optional"):
                keys = data_keys("ConfigMap", cm.get("name"))
                if keys is None:
                    report.error(where, f"volume {vname}: no ConfigMap {cm.get('name')!r}")
                else:
                    for item in cm.get("items") or []:
                        if item.get("key") not in keys:
                            report.error(
                                where,
                                f"volume {vname}: ConfigMap {cm.get('name')} "
                                f"has no key {item.get('key')!r}",
                            )
        if annotations.get("prometheus.io/scrape") == "true":
            port = annotations.get("prometheus.io/port")
            if port is None or not port.isdigit() or int(port) not in ports:
                report.error(
                    where, f"prometheus.io/port {port!r} is not a containerPort {sorted(ports)}"
                )
        if by_kind.get("ScaledObject") and "replicas" in spec:
            report.error(
                where,
                "sets spec.replicas although a ScaledObject owns the count "
                "(every apply would reset it)",
            )
        pdbs = [
            p
            for p in by_kind.get("PodDisruptionBudget", {}).values()
            if matches((p.get("spec") or {}).get("selector") or {}, labels)
        ]
        if by_kind.get("PodDisruptionBudget") and not pdbs:
            report.error(where, "no PodDisruptionBudget selects its pods")
        report.ok(where, "cross-references checked")

    for name, so in by_kind.get("ScaledObject", {}).items():
        where = f"ScaledObject/{name}"
        spec = so.get("spec") or {}
        target = spec.get("scaleTargetRef") or {}
        if target.get("kind", "Deployment") == "Deployment" and target.get(
            "name"
        ) not in by_kind.get("Deployment", {}):
            report.error(where, f"scaleTargetRef {target.get('name')!r} is not a Deployment here")
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            report.error(where, f"minReplicaCount {lo} > maxReplicaCount {hi}")
        for pdb_name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
            min_available = (pdb.get("spec") or {}).get("minAvailable")
            if (
                isinstance(min_available, int)
                and isinstance(lo, int)
                and min_available >= max(lo, 1)
            ):
                report.error(
                    where,
                    f"PDB {pdb_name} minAvailable={min_available} blocks every "
                    f"drain at minReplicaCount={lo}",
                )
        for trig in spec.get("triggers") or []:
            ref = trig.get("authenticationRef") or {}
            if (
                ref
                and ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
                and ref.get("name") not in by_kind.get("TriggerAuthentication", {})
            ):
                report.error(where, f"authenticationRef {ref.get('name')!r} is not defined")
            meta = trig.get("metadata") or {}
            if trig.get("type") == "rabbitmq" and not (
                ref or meta.get("host") or meta.get("hostFromEnv")
            ):
                report.error(where, "rabbitmq trigger: no host, hostFromEnv or authenticationRef")
        watched = {
            (t.get("metadata") or {}).get("queueName")
            for t in spec.get("triggers") or []
            if t.get("type") == "rabbitmq"
        }
        for queue in sorted(CONSUMED_QUEUES - watched):
            report.error(
                where,
                f"no rabbitmq trigger on {queue!r}: a backlog there would not scale the workers",
            )
        report.ok(where, "cross-references checked")

    for name, ta in by_kind.get("TriggerAuthentication", {}).items():
        where = f"TriggerAuthentication/{name}"
        for ref in (ta.get("spec") or {}).get("secretTargetRef") or []:
            keys = data_keys("Secret", ref.get("name"))
            if keys is None or ref.get("key") not in keys:
                report.error(
                    where, f"secretTargetRef {ref.get('name')}/{ref.get('key')} is not defined"
                )
        report.ok(where, "cross-references checked")

    for image in kust.get("images") or []:
        if image.get("name") not in images_used:
            report.error(
                "kustomization.yaml",
                f"images[].name {image.get('name')!r} matches no "
                f"container image {sorted(images_used)}",
            )


def check_policy_mount(
    where: str,
    policy_path: str,
    mounts: dict[str, Any],
    volumes: dict[str, Any],
    by_kind: dict[str, Any],
    report: Report,
) -> None:
    for mount_path, mount in mounts.items():
        prefix = mount_path.rstrip("/") + "/"
        if not policy_path.startswith(prefix):
            continue
        rel = policy_path[len(prefix) :]
        if mount.get("subPath"):
            report.error(
                where,
                f"{mount_path} is a subPath mount: ConfigMap edits never reach "
                "the pod, so the policy cannot hot-reload",
            )
        cm = (volumes.get(mount.get("name")) or {}).get("configMap")
        if not cm:
            report.error(where, f"MODERATION_POLICY={policy_path} is not on a ConfigMap volume")
            return
        items = cm.get("items")
        key = next((i.get("key") for i in items if i.get("path") == rel), None) if items else rel
        configmap = by_kind.get("ConfigMap", {}).get(cm.get("name"))
        text = ((configmap or {}).get("data") or {}).get(key) if key else None
        if text is None:
            report.error(
                where,
                f"MODERATION_POLICY={policy_path}: ConfigMap "
                f"{cm.get('name')!r} has no key for {rel!r}",
            )
            return
        check_policy_text(f"ConfigMap/{cm.get('name')} {key}", text, report)
        return
    report.error(where, f"MODERATION_POLICY={policy_path} is under no volumeMount")


def check_policy_text(where: str, text: str, report: Report) -> None:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        report.error(where, f"policy YAML: {exc}")
        return
    if not isinstance(data, dict):
        report.error(where, "policy is not a mapping")
        return
    try:
        sys.path.insert(0, str(REPO))
        from worker.policy import Policy  # the worker's own loader: the real contract
    except Exception as exc:  # any import problem means "cannot check deeper"
        report.note(where, f"policy parsed as YAML only (worker package not importable: {exc})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.yaml"
        path.write_text(text)
        try:
            policy = Policy.load(path, with_shadow=False)
        except Exception as exc:  # PolicyError and friends
            report.error(
                where,
                "the worker rejects this policy: " + str(exc).replace(str(path), "policy.yaml"),
            )
            return
    report.ok(
        where,
        f"policy loads with worker.policy ({len(data.get('rules') or [])} rules, "
        f"version {getattr(policy, 'version', '?')})",
    )
    default = REPO / "worker" / "policies" / "default.yaml"
    if default.is_file() and default.read_text() != text:
        message = (
            "differs from worker/policies/default.yaml "
            "(--write-policy-configmap copies the default)"
        )
        if REQUIRE_DEFAULT_POLICY:
            report.error(where, message)
        else:
            report.note(where, message + "; fine if intended")


def write_policy_configmap(target: Path) -> None:
    source = REPO / "worker" / "policies" / "default.yaml"
    text = source.read_text()

    class Literal(str):
        pass

    def literal(dumper: yaml.Dumper, value: Literal) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")

    yaml.add_representer(Literal, literal)
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "moderation-policy",
            "labels": {"app.kubernetes.io/name": "moderation-worker"},
        },
        "data": {"policy.yaml": Literal(text)},
    }
    header = (
        "# The moderation policy, mounted at /etc/moderation/policy.yaml "
        "(MODERATION_POLICY).\n# Edit in place: the worker reloads it within seconds "
        "of the kubelet updating the volume.\n# Generated from worker/policies/default.yaml "
        "by: python docker/k8s/validate.py --write-policy-configmap\n"
    )
    target.write_text(header + yaml.dump(doc, sort_keys=False, width=1000, allow_unicode=True))
    print(f"wrote {target} from {source}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=HERE, help="directory with kustomization.yaml")
    parser.add_argument(
        "--k8s-version",
        action="append",
        dest="versions",
        help=f"Kubernetes version(s) to check (default {DEFAULT_VERSIONS})",
    )
    parser.add_argument(
        "--write-policy-configmap",
        action="store_true",
        help="regenerate policy-configmap.yaml from worker/policies/default.yaml",
    )
    parser.add_argument(
        "--require-default-policy",
        action="store_true",
        help="error (not note) if the policy ConfigMap differs from the default",
    )
    args = parser.parse_args(argv)
    global REQUIRE_DEFAULT_POLICY
    REQUIRE_DEFAULT_POLICY = args.require_default_policy
    if args.write_policy_configmap:
        write_policy_configmap(args.dir / "policy-configmap.yaml")
    versions = args.versions or DEFAULT_VERSIONS
    report = Report()
    keda_schema = json.loads((HERE / "keda.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(keda_schema)

    docs, kust = load_documents(args.dir / "kustomization.yaml", report)
    if not docs:
        report.error("kustomization.yaml", "no resources")
    for file, obj in docs:
        api = str(obj.get("apiVersion", ""))
        if api.startswith("keda.sh/"):
            validate_keda(file, obj, keda_schema, report)
        else:
            validate_builtin(file, obj, versions, report)
    cross_check(docs, kust, report)

    print(
        f"\n{len(docs)} objects, {len(report.errors)} errors, {len(report.notes)} notes "
        f"(kubernetes-validate {metadata.version('kubernetes-validate')}, "
        f"Kubernetes {', '.join(versions)})"
    )
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
