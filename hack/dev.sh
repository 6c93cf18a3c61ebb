#!/usr/bin/env bash
# `make dev`: the local cluster, llmop, and a real llama-server serving the tiny model.
#
#   hack/dev.sh        start (or restart) everything and wait until the llama.cpp example is Ready
#   hack/dev.sh down   stop llmop, the pod runner, the model source and the cluster
#
# What runs, all on loopback: the control plane (hack/localcluster.py), the local model source
# (hack/modelsource.py: the Hugging Face mirror the agent downloads from), the pod runner
# (hack/podrunner.py: starts the real processes of each runtime pod at the pod's IP), and
# `llmop run`. Logs are in $LLMOP_CACHE/dev/.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
DEV_DIR="$LLMOP_CACHE/dev"
PY="$REPO_ROOT/.venv/bin/python"
mkdir -p "$DEV_DIR"

stop_dev_processes() {
  for name in operator podrunner modelsource; do
    if [ -f "$DEV_DIR/$name.pid" ]; then
      kill -TERM -- "-$(cat "$DEV_DIR/$name.pid")" 2>/dev/null || true
      rm -f "$DEV_DIR/$name.pid"
    fi
  done
}

start() {  # start NAME LOG COMMAND... : a background process group, its pid kept for `down`
  local name="$1" logfile="$2"; shift 2
  setsid "$@" >"$logfile" 2>&1 < /dev/null &
  echo $! >"$DEV_DIR/$name.pid"
}

if [ "${1:-up}" = "down" ]; then
  stop_dev_processes
  "$PY" hack/localcluster.py down
  echo "stopped"
  exit 0
fi

stop_dev_processes
log "starting the local cluster"
KUBECONFIG="$("$PY" hack/localcluster.py up)"
export KUBECONFIG
KUBECTL="$(hack/build-cluster-bins.sh | sed -n 's/^kubectl: //p')"
"$KUBECTL" apply --server-side -f crds/ >/dev/null
"$KUBECTL" wait --for=condition=Established crd/llmbackends.llmop.dev crd/modelpulls.llmop.dev >/dev/null

log "starting the model source, the pod runner and llmop"
start modelsource "$DEV_DIR/modelsource.log" "$PY" hack/modelsource.py --root "$DEV_DIR/models" --populate
for _ in $(seq 100); do
  source_url="$(grep -m1 '^http://' "$DEV_DIR/modelsource.log" || true)"
  [ -n "$source_url" ] && break
  sleep 0.2
done
[ -n "$source_url" ] || { cat "$DEV_DIR/modelsource.log"; echo "the model source did not start" >&2; exit 1; }
start podrunner "$DEV_DIR/podrunner.log" "$PY" hack/podrunner.py --kubeconfig "$KUBECONFIG" --workdir "$DEV_DIR/pods"
# Metrics on loopback only: a wildcard bind of 8080 would take llama-server's port at the pods' addresses.
LLMOP_HF_ENDPOINT="$source_url" LLMOP_METRICS_HOST=127.0.0.1 \
  start operator "$DEV_DIR/operator.log" "$REPO_ROOT/.venv/bin/llmop" run

log "applying examples/llamacpp.yaml"
"$KUBECTL" apply -n default -f examples/llamacpp.yaml
if ! "$KUBECTL" wait -n default --for=condition=Ready llmb/llamacpp-tiny --timeout=10m; then
  "$KUBECTL" get llmb,mpull -n default -o wide
  echo "the backend did not become Ready; logs are in $DEV_DIR/" >&2
  exit 1
fi
"$KUBECTL" get llmb,mpull -n default

cat <<EOF

llmop is running on the local cluster, and a real llama-server serves the tiny model.

  export KUBECONFIG=$KUBECONFIG
  alias kubectl=$KUBECTL
  kubectl get llmb                       # backends: runtime, phase, ready replicas, models, endpoint
  kubectl get mpull                      # model pulls and their progress
  kubectl describe llmb llamacpp-tiny    # conditions and events
  .venv/bin/llmop models --runtime llamacpp --url "\$(kubectl get pod -l llmop.dev/backend=llamacpp-tiny -o jsonpath='http://{.items[0].status.podIP}:8080')"

Metrics: curl -s http://127.0.0.1:8080/metrics | grep ^llmop_
Logs: $DEV_DIR/{operator,podrunner,modelsource}.log and $DEV_DIR/pods/logs/
Stop everything: make cluster-down
EOF
