# Shared shell helpers for hack/ scripts. Source it; it sets LLMOP_CACHE and the pinned versions.
set -euo pipefail
HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=versions.env
. "$HACK_DIR/versions.env"
export LLMOP_CACHE="${LLMOP_CACHE:-$HOME/.cache/llmop}"
export GOTOOLCHAIN=local
export CGO_ENABLED="${CGO_ENABLED:-0}"
BIN_ROOT="$LLMOP_CACHE/bin"
SRC_ROOT="$LLMOP_CACHE/src"
LOG_DIR="$LLMOP_CACHE/logs"
mkdir -p "$BIN_ROOT" "$SRC_ROOT" "$LOG_DIR"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# bin_dir NAME VERSION -> the cache folder holding that build
bin_dir() { echo "$BIN_ROOT/$1-$2"; }

# with_build_lock: serialize builds of the same cache (tests and make targets may start them at once).
with_build_lock() {
  exec 9>"$LLMOP_CACHE/.build-$1.lock"
  flock 9
}
