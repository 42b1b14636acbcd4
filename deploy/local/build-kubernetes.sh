#!/usr/bin/env bash
# Builds the local Kubernetes control plane from the Go module proxy into .cache/bin:
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (one wrapper module,
# because k8s.io/kubernetes maps its staging modules to v0.0.0 through local replaces),
# etcd (its own wrapper module, so its gRPC/otel versions cannot move the Kubernetes build)
# and kwok (the fake kubelet). Each step is skipped when its binary already reports the
# pinned version. Built binaries are also kept in a machine-wide cache (~/.cache/gitops), with
# the Go module and build caches, so a fresh clone on the same machine (CI) copies them instead
# of rebuilding: a cold build happens once per machine.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${GITOPS_CACHE_DIR:-$ROOT/.cache}
SHARED=${GITOPS_SHARED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitops}
BIN=$CACHE/bin
K8S_VERSION=${K8S_VERSION:-1.34.4}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
KWOK_VERSION=${KWOK_VERSION:-0.7.0}

export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local
export GOPATH=${GOPATH:-$SHARED/go}
export GOMODCACHE=${GOMODCACHE:-$SHARED/go/pkg/mod}
export GOCACHE=${GOCACHE:-$SHARED/go-build}
mkdir -p "$BIN" "$SHARED/bin" "$SHARED/build"

log() { printf '[build-kubernetes] %s\n' "$*" >&2; }

stamped() {  # stamped DIR NAME VERSION: DIR/NAME exists and was built for VERSION
  [[ -x "$1/$2" && -f "$1/.$2.version" && "$(cat "$1/.$2.version")" == "$3" ]]
}

stamp_ok() {  # stamp_ok NAME VERSION: the binary is in .cache/bin, copied from the shared cache if there
  stamped "$BIN" "$1" "$2" && return 0
  stamped "$SHARED/bin" "$1" "$2" || return 1
  cp "$SHARED/bin/$1" "$BIN/$1.tmp" && mv "$BIN/$1.tmp" "$BIN/$1"
  echo "$2" > "$BIN/.$1.version"
}

keep() {  # keep NAME VERSION: record a fresh build in .cache/bin and the shared cache
  echo "$2" > "$BIN/.$1.version"
  cp "$BIN/$1" "$SHARED/bin/$1.tmp" && mv "$SHARED/bin/$1.tmp" "$SHARED/bin/$1"
  echo "$2" > "$SHARED/bin/.$1.version"
}

copy_stages() {  # the kwok stage definitions ship inside its module; keep them next to the binary
  local src=$SHARED/kwok-stages-$KWOK_VERSION
  if [[ ! -d $src ]]; then
    GOFLAGS=-mod=mod go mod download "sigs.k8s.io/kwok@v$KWOK_VERSION"
    mkdir -p "$src.tmp"
    cp -r "$GOMODCACHE/sigs.k8s.io/kwok@v$KWOK_VERSION/kustomize/stage/." "$src.tmp/"
    chmod -R u+w "$src.tmp" && mv "$src.tmp" "$src"
  fi
  rm -rf "$CACHE/kwok-stages" && cp -r "$src" "$CACHE/kwok-stages"
}

build_kubernetes() {
  local all_ok=1
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    stamp_ok "$b" "$K8S_VERSION" || all_ok=0
  done
  if [[ $all_ok == 1 ]]; then log "kubernetes v$K8S_VERSION cached"; return; fi
  log "building kubernetes v$K8S_VERSION (cold: about 7 min with etcd and kwok on 2 cores)"
  local dir=$SHARED/build/k8s-$K8S_VERSION staging=0.${K8S_VERSION#1.} minor
  minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  mkdir -p "$dir" && cd "$dir"
  if [[ ! -f go.mod ]]; then
    go mod init local/k8s-build >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    # Every staging module the served go.mod maps to ./staging gets its published v0.X.Y.
    for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod"); do
      go mod edit "-replace=$m=$m@v$staging"
    done
    go mod edit "-require=k8s.io/kubernetes@v$K8S_VERSION" -godebug=default=go1.24
    cat > tools.go <<'GO'
//go:build tools

// Package tools pins the Kubernetes commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  fi
  local ldf="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
  ldf+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldf+=" -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
  go build -p 2 -trimpath -tags=selinux,notest -ldflags="$ldf" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    keep "$b" "$K8S_VERSION"
  done
}

build_etcd() {
  if stamp_ok etcd "$ETCD_VERSION"; then log "etcd v$ETCD_VERSION cached"; return; fi
  log "building etcd v$ETCD_VERSION"
  local dir=$SHARED/build/etcd-$ETCD_VERSION
  mkdir -p "$dir" && cd "$dir"
  if [[ ! -f go.mod ]]; then
    go mod init local/etcd-build >/dev/null 2>&1
    cat > main.go <<'GO'
// Command etcd runs the etcd server; a wrapper module because etcd's own server module
// carries local replace directives that `go install` refuses.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
    go mod tidy
  fi
  go build -trimpath -ldflags='-s -w' -o "$BIN/etcd" .
  keep etcd "$ETCD_VERSION"
}

build_kwok() {
  if stamp_ok kwok "$KWOK_VERSION"; then
    log "kwok v$KWOK_VERSION cached"
  else
    log "building kwok v$KWOK_VERSION"
    GOBIN=$BIN go install "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
    keep kwok "$KWOK_VERSION"
  fi
  [[ -d $CACHE/kwok-stages ]] || copy_stages
}

case "${1:-all}" in
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  kubernetes) build_kubernetes ;;
  all) build_etcd; build_kwok; build_kubernetes ;;
  *) echo "usage: $0 [all|etcd|kwok|kubernetes]" >&2; exit 2 ;;
esac
log "done: $(ls "$BIN" | tr '\n' ' ')"
