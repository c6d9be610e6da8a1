#!/usr/bin/env bash
# Builds the real upstream binaries that the test-time Kubernetes control plane runs
# (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok) from the Go
# module proxy, once, into a cache folder outside the checkout, and reuses them when they are
# already there.
#
#   bash tools/control-plane/build.sh          # or: npm run control-plane
#   bash tools/control-plane/build.sh --print-dir   # print the cache folder, build nothing
#
# Cache folder: ${KASBRIDGE_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kasbridge/control-plane}/<key>
# where <key> names the versions and hashes the wrapper modules and build flags, so that a change
# to any of them builds into a new folder. A folder counts as built only when its stamp file
# (control-plane.stamp, written last) matches. binaries.ts asks this script for the folder
# (--print-dir), so the key is computed here only.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
LDFLAGS_BASE="-s -w"

# The key: versions + a hash of what decides the binaries' content.
key_inputs() {
  printf 'kubernetes=%s etcd=%s kwok=%s ldflags=%s\n' "$KUBERNETES_VERSION" "$ETCD_VERSION" "$KWOK_VERSION" "$LDFLAGS_BASE"
  for f in kubernetes/go.mod kubernetes/go.sum etcd/go.mod etcd/go.sum etcd/main.go kwok/go.mod kwok/go.sum; do
    printf '%s\n' "$f"
    cat "$here/$f"
  done
}
hash="$(key_inputs | sha256sum | cut -c1-12)"
key="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_${hash}"
root="${KASBRIDGE_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kasbridge/control-plane}"
dir="$root/$key"
stamp_text="kubernetes=${KUBERNETES_VERSION} etcd=${ETCD_VERSION} kwok=${KWOK_VERSION} key=${key}"

if [ "${1:-}" = "--print-dir" ]; then echo "$dir"; exit 0; fi

binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok)
built() {
  [ -f "$dir/control-plane.stamp" ] && [ "$(head -n1 "$dir/control-plane.stamp")" = "$stamp_text" ] || return 1
  for b in "${binaries[@]}"; do [ -x "$dir/$b" ] || return 1; done
}
sizes() {
  for b in "${binaries[@]}"; do
    printf '  %-24s %s\n' "$b" "$(du -h --apparent-size "$dir/$b" | cut -f1)"
  done
  printf '  %-24s %s\n' total "$(du -ch --apparent-size "${binaries[@]/#/$dir/}" | tail -n1 | cut -f1)"
}

if built; then
  echo "control-plane: binaries present in $dir (${stamp_text%% key=*})"
  sizes
  exit 0
fi

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"; fi
command -v go >/dev/null || { echo "control-plane: go is not on PATH (expected Go 1.26 at /usr/local/go/bin)" >&2; exit 1; }
mkdir -p "$root"
# One build at a time per cache root: a second caller waits, then finds the binaries.
exec 9>"$root/.build.lock"
flock 9
if built; then
  echo "control-plane: binaries present in $dir (built by another process)"
  sizes
  exit 0
fi

# The machine has 2 cores and is shared: at most 2 parallel compile jobs.
export GOMAXPROCS="${GOMAXPROCS:-2}"
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
jobs=2

tmp="$(mktemp -d "$root/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

k8s_minor="${KUBERNETES_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
k8s_ldflags="$LDFLAGS_BASE"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

echo "control-plane: building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl ($KUBERNETES_VERSION), etcd ($ETCD_VERSION), kwok ($KWOK_VERSION)"
echo "control-plane: into $dir ($(go version | cut -d' ' -f3), GOFLAGS=$GOFLAGS, CGO_ENABLED=0, -p $jobs)"
start=$(date +%s)
step() { # name module-dir package ldflags
  local t0; t0=$(date +%s)
  (cd "$here/$2" && go build -p "$jobs" -ldflags "$4" -o "$tmp/$1" "$3")
  echo "control-plane:   $1 built in $(( $(date +%s) - t0 ))s"
}
step kube-apiserver kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
step kube-controller-manager kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
step kube-scheduler kubernetes k8s.io/kubernetes/cmd/kube-scheduler "$k8s_ldflags"
step kubectl kubernetes k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
step etcd etcd . "$LDFLAGS_BASE"
step kwok kwok sigs.k8s.io/kwok/cmd/kwok "$LDFLAGS_BASE"
elapsed=$(( $(date +%s) - start ))

{
  echo "$stamp_text"
  echo "go=$(go version | cut -d' ' -f3) built=$build_date seconds=$elapsed"
} > "$tmp/control-plane.stamp"
# Publish the finished folder in one rename, so a half-built folder is never taken for a cache.
rm -rf "$dir"
chmod 755 "$tmp"
mv "$tmp" "$dir"
trap - EXIT
echo "control-plane: built in ${elapsed}s"
sizes
