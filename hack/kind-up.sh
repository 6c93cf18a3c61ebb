#!/usr/bin/env bash
# For machines with Docker: a kind cluster with the llmop CRDs and examples, as an alternative to
# hack/localcluster.py. kind nodes are containers, so GPUs cannot be faked there: the nodes
# advertise no nvidia.com/gpu and GPU examples stay Pending with Scheduled=False (which is what
# llmop reports on any cluster without free GPUs). Set gpu.count: 0 in a copy of an example to
# run it on CPU. The e2e tests run against whatever KUBECONFIG points at:
#   hack/kind-up.sh && KUBECONFIG=$(kind get kubeconfig-path 2>/dev/null || echo ~/.kube/config) make e2e
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kind >/dev/null || { echo "kind is not installed: https://kind.sigs.k8s.io/" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "kubectl is not installed" >&2; exit 1; }
name="${LLMOP_KIND_NAME:-llmop}"
kind get clusters | grep -qx "$name" || kind create cluster --name "$name" --wait 120s
kubectl --context "kind-$name" apply --server-side -f crds/
kubectl --context "kind-$name" wait --for=condition=Established crd/llmbackends.llmop.dev crd/modelpulls.llmop.dev
echo "kind cluster '$name' ready (context kind-$name); apply examples with: kubectl apply -f examples/"
