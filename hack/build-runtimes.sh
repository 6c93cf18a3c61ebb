#!/usr/bin/env bash
# Builds the inference runtimes the e2e tests run for real, once per pinned version:
#   llama-server  llama.cpp's server, from the tree vendored in the llama-cpp-python sdist (CPU only)
#   ollama        Ollama's server, from the Go module github.com/ollama/ollama (cgo, CPU only)
# and names the vLLM stand-in (real vLLM cannot be installed here; see its docstring).
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
  smoke_ollama "$out.partial/ollama"
  rm -rf "$out"; mv "$out.partial" "$out"
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

with_build_lock runtimes
build_llama_server
build_ollama

echo "llama-server: $(bin_dir llama-server "$LLAMA_CPP_PYTHON_VERSION")/llama-server"
echo "ollama: $(bin_dir ollama "$OLLAMA_VERSION")/ollama"
echo "vllm: $HACK_DIR/standins/vllm_server.py (stand-in)"
