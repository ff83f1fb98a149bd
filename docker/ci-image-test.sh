#!/usr/bin/env bash
# Build the worker image and smoke-test it against the broker on this machine.
#
#   bash docker/ci-image-test.sh          # from the repository root, as root, non-interactive
#
# Phases (each one timed):
#   1. packages   apt-get install docker.io debootstrap        (skipped when already present)
#   2. dockerd    start `dockerd --bridge=none --iptables=false` (skipped when already up)
#   3. base       python:3.11-slim: used as-is if present; otherwise a stand-in is made with
#                 debootstrap (bookworm's python3 is 3.11) because CI cannot pull images.
#                 The rootfs tarball is cached in $CACHE_DIR, so this is ~1 min once, then seconds.
#   4. pip-index  serve this machine's local pip indexes to the build over 127.0.0.1
#   5. build      docker build --network host -f docker/Dockerfile -t moderation-worker:ci .
#   6. health     run the image (--network host, --read-only), wait for `python -m worker health`,
#                 check /metrics on MODERATION_METRICS_PORT
#   7. smoke      publish {"id":"docker-smoke-1",...} to moderation.requests, expect its verdict
#                 on the topic exchange moderation.verdicts within 60 s
#   8. stop       docker stop (warm shutdown) and check the exit status
# The container, the index server and the temporary RabbitMQ vhost are always cleaned up;
# on failure the container's logs are printed. dockerd is left running for the next run.
#
# Environment knobs (all optional):
#   MODERATION_CI_CACHE        cache dir                      (/var/cache/moderation-ci)
#   MODERATION_CI_IMAGE        tag to build                   (moderation-worker:ci)
#   MODERATION_CI_BROKER_URL   broker for the smoke test; when unset a throw-away vhost is
#                              created on 127.0.0.1:5672 with rabbitmqctl (falls back to "/")
#   MODERATION_CI_PIP_PORT     loopback port for the index server      (38741)
#   MODERATION_CI_HEALTH_TIMEOUT / MODERATION_CI_VERDICT_TIMEOUT  seconds (120 / 60)
#   MODERATION_CI_KEEP_IMAGE=0 remove the built image at the end (default: keep, for caching)
#   MODERATION_CI_BUILDER=legacy  force the legacy builder (default: BuildKit when available)
#   MODERATION_CI_REQUIRE_METRICS=0  only warn when /metrics does not answer
set -Eeuo pipefail
shopt -s inherit_errexit

SCRIPT_START=$(date +%s)
CACHE_DIR=${MODERATION_CI_CACHE:-/var/cache/moderation-ci}
IMAGE=${MODERATION_CI_IMAGE:-moderation-worker:ci}
BASE_IMAGE=python:3.11-slim
PIP_PORT=${MODERATION_CI_PIP_PORT:-38741}
HEALTH_TIMEOUT=${MODERATION_CI_HEALTH_TIMEOUT:-120}
VERDICT_TIMEOUT=${MODERATION_CI_VERDICT_TIMEOUT:-60}
SUITE=bookworm
STANDIN_PACKAGES=python3,python3-venv,python3-pip,ca-certificates
STANDIN_LABEL=org.moderation-ci.standin
CONTAINER=moderation-ci-$$
export DEBIAN_FRONTEND=noninteractive

log()  { printf '\n[ci-image-test %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
warn() { printf '[ci-image-test] WARNING: %s\n' "$*" >&2; }
die()  { printf '[ci-image-test] FAIL: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- timing
PHASES=()
PHASE_NAME=""
PHASE_T0=0
phase() {  # phase <name>: close the running phase, open a new one
    phase_end
    PHASE_NAME=$1
    PHASE_T0=$(date +%s)
    log "== phase: $1"
}
phase_end() {
    if [[ -n $PHASE_NAME ]]; then
        PHASES+=("$(printf '%-10s %4ss  %s' "$PHASE_NAME" "$(($(date +%s) - PHASE_T0))" "${1:-ok}")")
        PHASE_NAME=""
    fi
}

# ---------------------------------------------------------------- cleanup
HTTP_PID=""
VHOST=""
STAGE=""
STARTED_CONTAINER=0
on_exit() {
    local rc=$?
    set +e
    [[ $rc -ne 0 ]] && phase_end "FAILED"
    phase_end
    if [[ $STARTED_CONTAINER == 1 ]]; then
        if [[ $rc -ne 0 ]]; then
            echo "---------------- docker logs $CONTAINER (last 200 lines) ----------------"
            docker logs --tail 200 "$CONTAINER" 2>&1
            echo "---------------- docker inspect State ----------------"
            docker inspect --format '{{json .State}}' "$CONTAINER" 2>&1
            echo "-------------------------------------------------------------------------"
        fi
        docker rm -f "$CONTAINER" >/dev/null 2>&1
    fi
    if [[ -n $HTTP_PID ]]; then
        if [[ $rc -ne 0 && -s $CACHE_DIR/pip-index-server.log ]]; then
            echo "---- pip index server log (last 20 lines) ----"
            tail -n 20 "$CACHE_DIR/pip-index-server.log"
        fi
        kill "$HTTP_PID" 2>/dev/null; wait "$HTTP_PID" 2>/dev/null
    fi
    [[ -n $STAGE ]] && rm -rf "$STAGE"
    if [[ -n $VHOST ]]; then
        rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 \
            || { sleep 5; rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1; } \
            || echo "[ci-image-test] WARNING: could not delete RabbitMQ vhost $VHOST" >&2
    fi
    if [[ ${MODERATION_CI_KEEP_IMAGE:-1} == 0 ]]; then docker rmi -f "$IMAGE" >/dev/null 2>&1; fi
    echo
    echo "================ ci-image-test timings ================"
    printf '%s\n' "${PHASES[@]}"
    printf '%-10s %4ss\n' "total" "$(($(date +%s) - SCRIPT_START))"
    if [[ $rc -eq 0 ]]; then echo "RESULT: PASS"; else echo "RESULT: FAIL (exit $rc)"; fi
    exit $rc
}
trap on_exit EXIT
trap 'exit 130' INT TERM

[[ -f docker/Dockerfile && -f pyproject.toml ]] || die "run from the repository root (docker/Dockerfile and pyproject.toml expected)"
[[ $(id -u) == 0 ]] || die "must run as root (installs packages, starts dockerd)"
command -v python3 >/dev/null || die "python3 is needed on the host (index server, helpers)"
mkdir -p "$CACHE_DIR"

# ================================================================ 1. packages
phase packages
if command -v dockerd >/dev/null && command -v debootstrap >/dev/null && command -v docker >/dev/null; then
    echo "docker.io and debootstrap already installed"
else
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq docker.io debootstrap >/dev/null
fi

# ================================================================ 2. dockerd
phase dockerd
if docker info >/dev/null 2>&1; then
    echo "dockerd already running"
else
    echo "starting dockerd (log: $CACHE_DIR/dockerd.log)"
    # setsid + nohup: the daemon outlives this script, so the next run finds its image cache warm.
    setsid nohup dockerd --bridge=none --iptables=false >"$CACHE_DIR/dockerd.log" 2>&1 < /dev/null &
    for _ in $(seq 1 60); do
        [[ -S /var/run/docker.sock ]] && docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { tail -n 30 "$CACHE_DIR/dockerd.log"; die "dockerd did not come up in 60 s"; }
fi
docker version --format 'docker client {{.Client.Version}}, engine {{.Server.Version}}'

# BuildKit honours docker/Dockerfile.dockerignore; the legacy builder does not. The docker.io
# CLI (20.10) has BuildKit built in; newer CLIs need the buildx plugin for it.
BUILD=(env DOCKER_BUILDKIT=0 docker build)
BUILDER="legacy builder (docker/Dockerfile.dockerignore NOT honoured; whole context sent)"
if [[ ${MODERATION_CI_BUILDER:-auto} == legacy ]]; then
    BUILDER="legacy builder (forced by MODERATION_CI_BUILDER=legacy)"
elif docker buildx version >/dev/null 2>&1; then
    BUILD=(env DOCKER_BUILDKIT=1 docker build --progress plain)
    BUILDER="BuildKit via buildx"
else
    for cli in /usr/bin/docker $(type -ap docker); do
        v=$("$cli" version --format '{{.Client.Version}}' 2>/dev/null || true)
        if [[ $v =~ ^(1[89]|20)\. ]]; then
            BUILD=(env DOCKER_BUILDKIT=1 "$cli" build --progress plain)
            BUILDER="BuildKit built into $cli ($v)"
            break
        fi
    done
fi
echo "builder: $BUILDER"

# ================================================================ 3. base image
phase base

# This machine's pip configuration, translated for use inside the build:
#   local index directories / file:// URLs -> http://127.0.0.1:$PIP_PORT/<same path> (served in
#   phase 4; they are GBs, far too big to copy into an image, and `docker build` cannot bind-mount
#   without BuildKit-only syntax), cert / constraint files -> copied to the same path.
# Writes $STAGE/{pip.conf,files/...,serve.list} and prints the config hash.
STAGE=$(mktemp -d "$CACHE_DIR/stage.XXXXXX")
PIPCONF_HASH=$(python3 - "$STAGE" "$PIP_PORT" <<'PY'
import configparser, hashlib, os, shutil, subprocess, sys
from urllib.parse import urlparse, unquote

stage, port = sys.argv[1], sys.argv[2]
out = None
for cmd in ([sys.executable, "-m", "pip"], [shutil.which("pip3")], [shutil.which("pip")]):
    if cmd[0] is None:
        continue
    try:
        out = subprocess.run(cmd + ["config", "list"], capture_output=True, text=True,
                             check=True).stdout
        break
    except Exception:
        continue
if out is None:  # no pip on the host: only the CA bundle below
    print("(no pip on the host: its configuration cannot be read)", file=sys.stderr)
    out = ""
settings = {}                     # (section, key) -> value; :env: (PIP_*) wins over files
for line in out.splitlines():
    name, _, value = line.partition("=")
    section, _, key = name.rpartition(".")
    value = value.strip().strip("'\"")
    section = "global" if section in (":env:", "") else section
    if (section, key) not in settings or name.startswith(":env:"):
        settings[(section, key)] = value

# The system CA bundle always goes in (a TLS-intercepting proxy's CA may be in it), and pip
# is pointed at it unless the configuration names another.
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
if ("global", "cert") not in settings and os.path.isfile(SYSTEM_CA):
    settings[("global", "cert")] = SYSTEM_CA
serve, copies = set(), set()
def local_path(token):
    if token.startswith("file://"):
        return unquote(urlparse(token).path)
    if token.startswith("/") and os.path.exists(token):
        return token
    return None

def http_for(path, is_index):
    # A PEP 503 index at /x/simple often links ../../files/...: serve its parent too.
    root = os.path.dirname(path.rstrip("/")) if is_index and path.rstrip("/").endswith("/simple") else path
    serve.add(root.rstrip("/"))
    return f"http://127.0.0.1:{port}{path.rstrip('/')}/"

conf = configparser.ConfigParser(interpolation=None)
for (section, key), value in sorted(settings.items()):
    if key in ("index-url", "extra-index-url", "find-links"):
        tokens = []
        for tok in value.split():
            p = local_path(tok)
            tokens.append(http_for(p, key != "find-links") if p else tok)
        value = " ".join(tokens)
    elif key in ("cert", "client-cert", "constraint", "requirement") and os.path.isfile(value):
        copies.add(value)
    if not conf.has_section(section):
        conf.add_section(section)
    conf.set(section, key, value)
if serve:  # pip treats 127.0.0.0/8 as secure anyway; explicit for older pips
    if not conf.has_section("global"):
        conf.add_section("global")
    conf.set("global", "trusted-host", "127.0.0.1")

with open(os.path.join(stage, "pip.conf"), "w") as f:
    f.write("# Generated by docker/ci-image-test.sh from this machine's `pip config list`.\n")
    conf.write(f)
for src in sorted(copies):
    dst = os.path.join(stage, "files", src.lstrip("/"))
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(src, dst)
with open(os.path.join(stage, "serve.list"), "w") as f:
    f.write("\n".join(sorted(serve)) + ("\n" if serve else ""))

h = hashlib.sha256(open(os.path.join(stage, "pip.conf"), "rb").read())
for src in sorted(copies):
    h.update(src.encode()); h.update(open(src, "rb").read())
print(h.hexdigest()[:16])
PY
)
echo "pip configuration for the build (hash $PIPCONF_HASH):"
sed 's/^/    /' "$STAGE/pip.conf"
while read -r d; do
    [[ -n $d ]] && echo "    serve $d over loopback ($(du -sh "$d" 2>/dev/null | cut -f1))"
done < "$STAGE/serve.list"

make_standin_rootfs() {  # -> echoes path of the cached rootfs tarball
    local mirror proxy key tarball work
    # The machine's Debian mirror: first "deb" source for $SUITE/main in sources.list(.d).
    mirror=$(python3 - "$SUITE" <<'PY'
import glob, re, sys
suite = sys.argv[1]
files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
        + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
for path in files:
    try:
        text = open(path).read()
    except OSError:
        continue
    if path.endswith(".sources"):                       # deb822
        for block in re.split(r"\n\s*\n", text):
            fields = {}
            for line in block.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.split()
            if fields.get("enabled", ["yes"])[0].lower() == "no":
                continue
            if "deb" in fields.get("types", []) and suite in fields.get("suites", []) \
                    and "main" in fields.get("components", []):
                print(fields["uris"][0]); sys.exit(0)
    else:                                               # one-line format
        for line in text.splitlines():
            m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
            if m and m.group(2) == suite and "main" in m.group(3).split():
                print(m.group(1)); sys.exit(0)
print("http://deb.debian.org/debian")
PY
)
    eval "$(apt-config shell proxy Acquire::http::Proxy)"
    [[ -n ${proxy:-} ]] && export http_proxy=$proxy
    key=$(printf '%s|%s|%s|v1' "$SUITE" "$mirror" "$STANDIN_PACKAGES" | sha256sum | cut -c1-12)
    tarball=$CACHE_DIR/standin-$SUITE-$key.tar
    if [[ -s $tarball ]]; then
        echo "cached stand-in rootfs: $tarball" >&2
    else
        echo "debootstrap $SUITE from $mirror (minbase + $STANDIN_PACKAGES)" >&2
        work=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
        debootstrap --variant=minbase --include="$STANDIN_PACKAGES" "$SUITE" "$work" "$mirror" \
            >"$CACHE_DIR/debootstrap.log" 2>&1 \
            || { tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; rm -rf "$work"; return 1; }
        # Make it look like python:3.11-slim where it matters: `python`, `python3.11`, `pip`
        # resolve, and pip may install outside a venv (no PEP 668 marker).
        ln -sf /usr/bin/python3 "$work/usr/local/bin/python"
        ln -sf /usr/bin/python3 "$work/usr/local/bin/python3"
        ln -sf /usr/bin/pip3 "$work/usr/local/bin/pip"
        rm -f "$work"/usr/lib/python3*/EXTERNALLY-MANAGED
        chroot "$work" python3.11 -c 'import sys, venv, ensurepip, ssl; assert sys.version_info[:2] == (3, 11), sys.version'
        rm -rf "$work"/var/cache/apt/archives/*.deb "$work"/var/lib/apt/lists/* \
               "$work"/usr/share/doc/* "$work"/usr/share/man/* "$work"/usr/share/info/* \
               "$work"/var/log/* "$work"/tmp/* "$work"/etc/hostname
        # The Debian rootfs minus /dev, /proc, /sys contents (docker provides those).
        tar --numeric-owner -C "$work" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
            -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$work"
        echo "stand-in rootfs cached: $tarball ($(du -h "$tarball" | cut -f1))" >&2
    fi
    echo "$tarball"
}

existing_label=""
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    existing_label=$(docker image inspect -f "{{index .Config.Labels \"$STANDIN_LABEL\"}}" "$BASE_IMAGE" 2>/dev/null || true)
    [[ $existing_label == "<no value>" ]] && existing_label=""
fi
STANDIN=0
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && [[ -z $existing_label ]]; then
    echo "$BASE_IMAGE exists locally and is not our stand-in: using it as is"
    echo "(pip inside the build then uses that image's own configuration, i.e. PyPI)"
elif [[ $existing_label == "$PIPCONF_HASH" ]]; then
    echo "$BASE_IMAGE is our stand-in, up to date (pip config hash $PIPCONF_HASH)"
    STANDIN=1
else
    STANDIN=1
    tarball=$(make_standin_rootfs)
    rootfs_image=moderation-ci/debian-rootfs:$SUITE-$(basename "$tarball" .tar | sed 's/.*-//')
    if ! docker image inspect "$rootfs_image" >/dev/null 2>&1; then
        echo "docker import $tarball -> $rootfs_image"
        docker import "$tarball" "$rootfs_image" >/dev/null
    fi
    # Thin layer on top: this machine's pip config + CA bundle + constraints, the python image's
    # ENV/CMD, and a label recording the pip config hash (a new hash rebuilds only this layer).
    mkdir -p "$STAGE/files"
    cat > "$STAGE/Dockerfile" <<EOF
FROM $rootfs_image
COPY files/ /
COPY pip.conf /etc/pip.conf
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
LABEL $STANDIN_LABEL="$PIPCONF_HASH" org.opencontainers.image.description="CI stand-in for $BASE_IMAGE: Debian $SUITE python3 via debootstrap"
CMD ["python3"]
EOF
    "${BUILD[@]}" -q -t "$BASE_IMAGE" "$STAGE" >/dev/null
    echo "stand-in $BASE_IMAGE ready: $(docker run --rm "$BASE_IMAGE" python --version) ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
fi

# ================================================================ 4. pip index server
phase pip-index
if [[ $STANDIN == 1 && -s $STAGE/serve.list ]]; then
    SERVE_ROOT=$CACHE_DIR/pip-serve
    rm -rf "$SERVE_ROOT"; mkdir -p "$SERVE_ROOT"
    while read -r d; do      # a symlink tree exposing only these directories, at their own paths
        [[ -n $d ]] || continue
        mkdir -p "$SERVE_ROOT$(dirname "$d")"
        ln -s "$d" "$SERVE_ROOT$d"
    done < "$STAGE/serve.list"
    if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $PIP_PORT)) != 0)"; then
        die "127.0.0.1:$PIP_PORT is already in use; set MODERATION_CI_PIP_PORT to a free port"
    fi
    python3 -m http.server --bind 127.0.0.1 --directory "$SERVE_ROOT" "$PIP_PORT" \
        >"$CACHE_DIR/pip-index-server.log" 2>&1 &
    HTTP_PID=$!
    for _ in $(seq 1 50); do
        python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PIP_PORT/', timeout=1)" 2>/dev/null && break
        sleep 0.2
    done
    kill -0 "$HTTP_PID" 2>/dev/null || die "index server did not start (see $CACHE_DIR/pip-index-server.log)"
    echo "serving $(tr '\n' ' ' < "$STAGE/serve.list")on http://127.0.0.1:$PIP_PORT/ (pid $HTTP_PID)"
else
    echo "nothing to serve"
fi
rm -rf "$STAGE"; STAGE=""

# ================================================================ 5. build
phase build
if ! "${BUILD[@]}" --network host --build-arg BASE_IMAGE="$BASE_IMAGE" -f docker/Dockerfile -t "$IMAGE" . \
        2>&1 | sed -u 's/^/    /'; then
    die "docker build failed"
fi
if [[ -n $HTTP_PID ]]; then kill "$HTTP_PID" 2>/dev/null; wait "$HTTP_PID" 2>/dev/null || true; HTTP_PID=""; fi
echo "image $IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}') \
(base $(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
user=$(docker image inspect -f '{{.Config.User}}' "$IMAGE")
[[ -n $user && $user != root && $user != 0 && $user != 0:0 ]] || die "image runs as root (User='$user')"
docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE" | grep -q '"worker","health"' \
    || die "image has no HEALTHCHECK running python -m worker health"
docker run --rm --network none --entrypoint sh "$IMAGE" -c \
    'for t in gcc cc make g++; do command -v $t && exit 1; done; exit 0' >/dev/null \
    || die "build tools found in the runtime image"

# ================================================================ 6. run + health
phase health
broker_up() {  # the local RabbitMQ answers (its listener is closed while the app is stopped)
    if command -v rabbitmqctl >/dev/null; then
        rabbitmqctl -q list_vhosts >/dev/null 2>&1
    else
        python3 -c "import socket; socket.create_connection(('127.0.0.1', 5672), 2).close()" 2>/dev/null
    fi
}
make_vhost() {
    VHOST=moderation-ci-$$-$RANDOM
    rabbitmqctl -q add_vhost "$VHOST" >/dev/null 2>&1 \
        && rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null 2>&1 \
        && return 0
    rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1
    VHOST=""
    return 1
}
if [[ -n ${MODERATION_CI_BROKER_URL:-} ]]; then
    BROKER_URL=$MODERATION_CI_BROKER_URL
else
    t0=$(date +%s)
    until broker_up; do
        (( $(date +%s) - t0 < 90 )) || die "RabbitMQ on 127.0.0.1:5672 not answering for 90 s"
        sleep 2
    done
    if command -v rabbitmqctl >/dev/null; then
        # A throw-away vhost: the container must not eat messages of other workers/tests on
        # this broker, and their workers must not answer our smoke message.
        for _ in 1 2 3; do make_vhost && break; sleep 5; done
        [[ -n $VHOST ]] || die "could not create a RabbitMQ vhost with rabbitmqctl"
        BROKER_URL=amqp://guest:guest@127.0.0.1:5672/$VHOST
    else
        warn "no rabbitmqctl: testing on vhost '/', shared with anything else on this broker"
        BROKER_URL=amqp://guest:guest@127.0.0.1:5672//
    fi
fi
echo "broker: $(sed -E 's#//([^:/@]+):[^@]*@#//\1:***@#' <<< "$BROKER_URL")"
METRICS_PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")

STARTED_CONTAINER=1
# --read-only + tmpfs /tmp: the same constraints as compose.yaml and the k8s Deployment.
docker run -d --name "$CONTAINER" --network host --read-only --tmpfs /tmp \
    -e MODERATION_BROKER_URL="$BROKER_URL" \
    -e MODERATION_METRICS_PORT="$METRICS_PORT" \
    ${MODERATION_CI_REDIS_URL:+-e MODERATION_REDIS_URL="$MODERATION_CI_REDIS_URL"} \
    "$IMAGE" >/dev/null
echo "container $CONTAINER started (uid $(docker exec "$CONTAINER" id -u)); metrics port $METRICS_PORT"
t0=$(date +%s)
until docker exec "$CONTAINER" python -m worker health >/tmp/$CONTAINER.health 2>&1; do
    [[ $(docker inspect -f '{{.State.Running}}' "$CONTAINER") == true ]] \
        || die "container exited (status $(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER"))"
    (( $(date +%s) - t0 < HEALTH_TIMEOUT )) || { cat /tmp/$CONTAINER.health; die "not healthy after ${HEALTH_TIMEOUT}s"; }
    sleep 2
done
echo "healthy after $(($(date +%s) - t0)) s (python -m worker health: exit 0) $(tr '\n' ' ' < /tmp/$CONTAINER.health)"
rm -f /tmp/$CONTAINER.health
# Prometheus metrics on MODERATION_METRICS_PORT (MODERATION_CI_REQUIRE_METRICS=0: warn only).
python3 - "$METRICS_PORT" <<'PY' || { [[ ${MODERATION_CI_REQUIRE_METRICS:-1} == 0 ]] \
    && warn "no metrics on 127.0.0.1:$METRICS_PORT/metrics"; } \
    || die "no metrics on 127.0.0.1:$METRICS_PORT/metrics (MODERATION_METRICS_PORT)"
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5) as r:
        lines = r.read().decode().splitlines()
except OSError as e:
    sys.exit(f"metrics: {e}")
ours = [line for line in lines if line.startswith("moderation")]
if not ours:
    sys.exit("metrics: no moderation_* series")
print(f"metrics: {len(lines)} lines, {len(ours)} moderation_* samples, e.g. {(ours or lines)[:1]}")
PY

# ================================================================ 7. smoke
phase smoke
# Runs inside the built image (it has kombu), so the host needs nothing but docker.
docker run --rm -i --network host -e BROKER_URL="$BROKER_URL" -e VERDICT_TIMEOUT="$VERDICT_TIMEOUT" \
    --entrypoint python "$IMAGE" - <<'PY'
import json, os, sys, time
from amqp import Message
from kombu import Connection

REQUESTS, VERDICTS, ID = "moderation.requests", "moderation.verdicts", "docker-smoke-1"
timeout = float(os.environ["VERDICT_TIMEOUT"])
request = {"id": ID, "text": "hello from the container test"}

with Connection(os.environ["BROKER_URL"], connect_timeout=10) as conn:
    conn.ensure_connection(max_retries=5)
    # The worker declares the request queue and the verdict exchange; until it has, binding
    # fails with NOT_FOUND (which closes the channel) and a publish would be dropped. Retry.
    deadline = time.monotonic() + timeout
    while True:
        ch = conn.channel()
        try:
            ch.queue_declare(queue=REQUESTS, passive=True)
            ch.exchange_declare(exchange=VERDICTS, type="topic", passive=True)
            tmp = ch.queue_declare(queue="", exclusive=True, auto_delete=True).queue
            ch.queue_bind(queue=tmp, exchange=VERDICTS, routing_key="#")
            break
        except conn.channel_errors as e:
            if time.monotonic() > deadline:
                sys.exit(f"FAIL: {REQUESTS} / {VERDICTS} not declared after {timeout:.0f}s: {e}")
            time.sleep(1)

    got = []
    def on_message(msg):
        try:
            body = json.loads(msg.body)
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("id") == ID:
            got.append(body)
    ch.basic_consume(queue=tmp, callback=on_message, no_ack=True)

    ch.basic_publish(Message(json.dumps(request), content_type="application/json",
                             content_encoding="utf-8", delivery_mode=2),
                     exchange="", routing_key=REQUESTS)
    t0 = time.monotonic()
    print(f"published {request} to {REQUESTS}; waiting up to {timeout:.0f}s for its verdict")
    while not got and time.monotonic() - t0 < timeout:
        try:
            conn.drain_events(timeout=1)
        except TimeoutError:  # socket.timeout is TimeoutError since 3.10
            pass
    if not got:
        sys.exit(f"FAIL: no verdict for {ID} on {VERDICTS} within {timeout:.0f}s")
    print(f"verdict after {time.monotonic() - t0:.2f}s: {json.dumps(got[0])[:400]}")
PY

# ================================================================ 8. graceful stop
phase stop
t0=$(date +%s)
docker stop -t 60 "$CONTAINER" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER")
echo "docker stop took $(($(date +%s) - t0)) s, exit code $code"
[[ $code == 0 ]] || die "worker did not exit cleanly on SIGTERM (exit code $code)"
phase_end
exit 0
