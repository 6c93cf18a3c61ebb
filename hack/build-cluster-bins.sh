#!/usr/bin/env bash
# Builds the local control plane from Go modules, once per pinned version:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok, kwokctl, helm.
# A warm cache builds nothing. Safe to re-run after an interruption (go's caches resume).
# Prints one line per binary: NAME: PATH
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

K8S_MINOR="${KUBERNETES_VERSION#v1.}"; K8S_MINOR="${K8S_MINOR%%.*}"
K8S_STAGING_VERSION="v0.${KUBERNETES_VERSION#v1.}"

build_kubernetes() {
  local out; out="$(bin_dir kubernetes "$KUBERNETES_VERSION")"
  if [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/kube-scheduler" ] && [ -x "$out/kubectl" ]; then return; fi
  local src="$SRC_ROOT/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$src" "$out.partial"
  log "building kubernetes $KUBERNETES_VERSION (tens of minutes on 2 cores the first time)"
  # k8s.io/kubernetes replaces its staging modules with local paths; a scratch module
  # replaces each with its published v0.x release instead.
  local staging
  staging=$(curl -fsSL "https://proxy.golang.org/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod" \
    | sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p')
  {
    echo "module llmop.dev/localcluster/kubernetes"
    echo "go 1.26"
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    for m in $staging; do
      [ "$m" = "k8s.io/sample-cli-plugin" ] && continue  # not published, not needed
      echo "replace $m => $m $K8S_STAGING_VERSION"
    done
  } > "$src/go.mod"
  cat > "$src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$src" && go mod tidy -e >/dev/null 2>&1 || true; cd "$src" && go mod download)
  local pkg ver_flags=""
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ver_flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
    ver_flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    log "  go build $cmd"
    (cd "$src" && go build -trimpath -ldflags "-s -w $ver_flags" -o "$out.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
  rm -rf "$out"; mv "$out.partial" "$out"
}

build_etcd() {
  local out; out="$(bin_dir etcd "$ETCD_VERSION")"
  [ -x "$out/etcd" ] && return
  local src="$SRC_ROOT/etcd-$ETCD_VERSION"
  mkdir -p "$src" "$out.partial"
  log "building etcd $ETCD_VERSION"
  cat > "$src/go.mod" <<GOMOD
module llmop.dev/localcluster/etcd
go 1.26
require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > "$src/main.go" <<'GO'
// etcd's own main: the root module cannot be installed with go install (local replaces).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$src" && go mod tidy && go build -trimpath -ldflags "-s -w" -o "$out.partial/etcd" .)
  rm -rf "$out"; mv "$out.partial" "$out"
}

go_install() {  # go_install NAME VERSION MODULE/PATH/TO/CMD...
  local name="$1" version="$2"; shift 2
  local out; out="$(bin_dir "$name" "$version")"
  local missing=0 pkg
  for pkg in "$@"; do [ -x "$out/$(basename "$pkg")" ] || missing=1; done
  [ "$missing" = 0 ] && return
  log "building $name $version"
  mkdir -p "$out.partial"
  for pkg in "$@"; do
    GOBIN="$out.partial" go install -trimpath -ldflags "-s -w" "$pkg@$version"
  done
  rm -rf "$out"; mv "$out.partial" "$out"
}

with_build_lock cluster
build_kubernetes
build_etcd
go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm

for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  echo "$b: $(bin_dir kubernetes "$KUBERNETES_VERSION")/$b"
done
echo "etcd: $(bin_dir etcd "$ETCD_VERSION")/etcd"
echo "kwok: $(bin_dir kwok "$KWOK_VERSION")/kwok"
echo "kwokctl: $(bin_dir kwok "$KWOK_VERSION")/kwokctl"
echo "helm: $(bin_dir helm "$HELM_VERSION")/helm"
