#!/usr/bin/env bash
# Build the local Kubernetes control plane from Go modules (no downloads but the Go module proxy), once per
# machine and version:
#   k8s/   kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes v1.36.x, staging modules
#          replaced by their published v0.36.x versions)
#   etcd/  etcd (go.etcd.io/etcd/server/v3 etcdmain)
#   kwok/  kwok (sigs.k8s.io/kwok), which plays the nodes and the pods' status
#   k8s/   also kubelet and kube-proxy, and coredns/ CoreDNS (github.com/coredns/coredns, CGO_ENABLED=0): the
#          one real node (testbed/kube_node.py) with Debian's containerd
#   kuberouter/  kube-router (github.com/cloudnativelabs/kube-router/v2, CGO_ENABLED=0), run on the real node as
#          its NetworkPolicy firewall only (no routing, no service proxy): the bridge CNI enforces no policy
#
# The binaries go to ${HELIX_KUBE_CACHE:-~/.cache/helix-ops/kube}/<hash of the inputs>/bin; a finished build
# leaves <dir>/build.json (its timings). A lock makes a second caller wait for a running build instead of
# starting its own. GOMODCACHE and GOCACHE are Go's defaults, so later builds reuse them.
#
#   build.sh            build if missing, print the bin folder
#   build.sh --dir      print the bin folder (built or not) and exit
#   build.sh --check    exit 0 when built, 1 when not
#   build.sh --background   unless built, start the build detached at nice 19 (logging to <cache>/build.log)
#                       and return at once; a later plain build.sh waits for it (make test does this first,
#                       so the build overlaps the rest of the suite; the kube fixture waits for it)
#
# Environment: KUBE_BUILD_P (go build -p, default: the number of cores), KUBE_BUILD_NICE (default 0).
set -euo pipefail
# All in one function, so bash has read the whole script before it runs any of it (editing the file while a
# build runs must not change what that build does).
main() {
  here="$(cd "$(dirname "$0")" && pwd)"
  export PATH="/usr/local/go/bin:$PATH"
  export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:--buildvcs=false}"

  # What the binaries depend on: the modules, the Go version and how they are built (bump RECIPE when the steps
  # below change what they produce; comments here do not).
  RECIPE="v3 -trimpath -ldflags=-s -w, Kubernetes version stamped; etcd kwok kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns kube-router"
  inputs() {
    cd "$here"
    echo "$RECIPE"
    cat k8s/go.mod k8s/go.sum k8s/tools.go etcd/go.mod etcd/go.sum etcd/main.go kwok/go.mod kwok/go.sum \
      kwok/tools.go coredns/go.mod coredns/go.sum coredns/tools.go kuberouter/go.mod kuberouter/go.sum \
      kuberouter/tools.go
    go version
  }
  hash="$(inputs | sha256sum | cut -c1-16)"
  root="${HELIX_KUBE_CACHE:-$HOME/.cache/helix-ops/kube}"
  out="$root/$hash"
  bin="$out/bin"

  case "${1:-}" in
    --dir) echo "$bin"; exit 0 ;;
    --check) [ -f "$out/build.json" ]; exit $? ;;
    --background)
      if [ -f "$out/build.json" ]; then exit 0; fi
      mkdir -p "$root"
      KUBE_BUILD_NICE="${KUBE_BUILD_NICE:-19}" nohup setsid bash "$here/build.sh" >>"$root/build.log" 2>&1 </dev/null &
      echo "building the Kubernetes control plane in the background (log: $root/build.log)" >&2
      exit 0 ;;
  esac

  mkdir -p "$root"
  exec 9>"$root/$hash.lock"
  if ! flock -n 9; then
    echo "another build of $hash is running; waiting for it" >&2
    flock 9
  fi
  if [ -f "$out/build.json" ]; then
    echo "$bin"
    exit 0
  fi

  p="${KUBE_BUILD_P:-$(nproc)}"
  nice_n="${KUBE_BUILD_NICE:-0}"
  tmp="$out.tmp.$$"
  rm -rf "$out" "$out".tmp.*
  mkdir -p "$tmp/bin"
  flags=(-p "$p" -trimpath "-ldflags=-s -w")
  t0=$(date +%s)
  step() {  # step <name> <module dir> <packages...>
    local name=$1 dir=$2; shift 2
    local s; s=$(date +%s)
    echo "$(date -u +%T) building $name (go build -p $p, nice $nice_n) ..." >&2
    (cd "$here/$dir" && nice -n "$nice_n" go build "${flags[@]}" -o "$tmp/bin/" "$@")
    echo "$(date -u +%T) $name built in $(( $(date +%s) - s ))s" >&2
    eval "t_$dir=$(( $(date +%s) - s ))"
  }
  step etcd etcd .
  step kwok kwok sigs.k8s.io/kwok/cmd/kwok
  # /version reports the module's version (a plain go build leaves v0.0.0-master)
  local kver; kver=$(cd "$here/k8s" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
  local minor; minor=$(echo "$kver" | cut -d. -f2)
  local vpkg=k8s.io/component-base/version
  flags=(-p "$p" -trimpath "-ldflags=-s -w -X $vpkg.gitVersion=$kver -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean")
  step kubernetes k8s k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
  flags=(-p "$p" -trimpath "-ldflags=-s -w")
  CGO_ENABLED=0 step coredns coredns github.com/coredns/coredns
  CGO_ENABLED=0 step kube-router kuberouter github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
  total=$(( $(date +%s) - t0 ))
  printf '{"hash": "%s", "go": "%s", "p": %s, "seconds": {"etcd": %s, "kwok": %s, "kubernetes": %s, "coredns": %s, "kube-router": %s, "total": %s}}\n' \
    "$hash" "$(go env GOVERSION)" "$p" "$t_etcd" "$t_kwok" "$t_k8s" "$t_coredns" "$t_kuberouter" "$total" > "$tmp/build.json"
  mv "$tmp" "$out"
  # older versions' binaries (about 400 MB each) are no longer needed on this machine
  local d
  for d in "$root"/*/; do
    d="${d%/}"
    if [ "$d" != "$out" ] && [ -f "$d/build.json" ]; then rm -rf "$d"; echo "removed the old build $d" >&2; fi
  done
  echo "kube control plane built in ${total}s: $bin" >&2
  echo "$bin"
}
main "$@"
exit $?
