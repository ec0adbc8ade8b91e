#!/usr/bin/env bash
# Builds the Kubernetes binaries the Kubernetes-mode tests run (see
# internal/kubetest): kube-apiserver v1.31.4, and kubectl from the same
# release when the machine has no kubectl on PATH. They come from the Go
# module test/kube-apiserver and go into a cache directory outside the
# repository; a binary already there is not built again, so CI pays the
# cold build (a few minutes on 2 cores) once, when the cache is empty.
# `make deps` runs it.
#
# Environment (all optional):
#   MEMBRANE_KUBE_BIN_DIR  the cache (default /var/cache/membrane-test/k8s-v1.31.4);
#                          internal/kubetest looks there too
#   KUBE_BUILD_KUBECTL=1   build kubectl even when one is on PATH
#   GO                     the go command (default: go)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
mod=$repo/test/kube-apiserver
version=v1.31.4
dir=${MEMBRANE_KUBE_BIN_DIR:-/var/cache/membrane-test/k8s-$version}
export PATH="$PATH:/usr/local/go/bin"
GO=${GO:-go}

# The cached binaries are built from exactly this go.mod/go.sum; a change
# to either (but to go.mod's comments) makes them stale.
stamp=$({ sed -e 's|//.*||' -e '/^[[:space:]]*$/d' "$mod/go.mod"; cat "$mod/go.sum"; } | sha256sum | cut -d' ' -f1)

# What kubectl version and friends print, as a release build would.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags="$ldflags -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=31 -X $pkg.gitTreeState=clean"
done

build() { # build NAME: into $dir/NAME unless it is there and current
	local name=$1
	if [ -x "$dir/$name" ] && [ "$(cat "$dir/$name.stamp" 2>/dev/null)" = "$stamp" ]; then
		echo "$name $version: cached in $dir"
		return
	fi
	echo "building $name $version into $dir (a few minutes the first time)"
	local start=$SECONDS tmp="$dir/.$name.tmp.$$"
	# Written under a temporary name and renamed, so an interrupted build
	# never leaves a binary that looks complete.
	trap 'rm -f "$tmp"' EXIT
	(cd "$mod" && "$GO" build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp" "k8s.io/kubernetes/cmd/$name")
	mv -f "$tmp" "$dir/$name"
	echo "$stamp" >"$dir/$name.stamp"
	trap - EXIT
	echo "$name $version: built in $((SECONDS - start))s"
}

mkdir -p "$dir"
build kube-apiserver
if [ "${KUBE_BUILD_KUBECTL:-}" = 1 ] || ! command -v kubectl >/dev/null 2>&1; then
	build kubectl
else
	echo "kubectl: using $(command -v kubectl)"
fi
