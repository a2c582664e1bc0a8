#!/usr/bin/env bash
# Builds kube-apiserver from source at a pinned Kubernetes release, once, for
# the tests that need a real API server (tests/src/lab/kube.rs). The binary is
# cached by version in target/kube/<version>/kube-apiserver; when it is there
# this script does nothing.
#
# The build uses a throwaway Go module in target/kube/build-<version>/ that
# requires k8s.io/kubernetes at the release and replaces every staging module
# (k8s.io/api, apimachinery, apiserver, client-go, ...: those the release's
# go.mod replaces with ./staging/...) with its published v0.<minor>.<patch>.
# Modules come from the Go module proxy. Needs Go (>= the release's go line).
#
# kubectl is taken from PATH (the machine image has one); where there is
# none, kubectl of the same release is built too, beside kube-apiserver.
#
# The version is pinned here and in tests/src/lab/kube.rs (KUBE_VERSION);
# change both together.
set -euo pipefail

version=${PETREL_KUBE_VERSION:-v1.37.2}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$repo/target/kube/$version
bin=$out/kube-apiserver
targets=()
[ -x "$bin" ] || targets+=(kube-apiserver)
command -v kubectl >/dev/null 2>&1 || [ -x "$out/kubectl" ] || targets+=(kubectl)
if [ ${#targets[@]} -eq 0 ]; then
  exit 0
fi

go=$(command -v go || true)
[ -n "$go" ] || go=/usr/local/go/bin/go
if [ ! -x "$go" ]; then
  echo "kube-apiserver.sh: Go not found (PATH or /usr/local/go/bin/go): cannot build kube-apiserver $version" >&2
  exit 1
fi

export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
staging_version=v0.${version#v1.}
build=$repo/target/kube/build-$version
mkdir -p "$build" "$out"
cd "$build"
rm -f go.mod go.sum

start=$(date +%s)
cache=$("$go" env GOMODCACHE)/cache/download
mkdir -p "$cache"
before=$(du -sk "$cache" | cut -f1)

echo "kube-apiserver.sh: building ${targets[*]} $version (once; cached in ${out#"$repo"/})"
# The release's go.mod: its go and godebug lines, and the staging modules.
gomod=$("$go" mod download -json "k8s.io/kubernetes@$version" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
if [ ! -f "$gomod" ]; then
  echo "kube-apiserver.sh: could not download k8s.io/kubernetes@$version" >&2
  exit 1
fi
go_line=$(grep -m1 '^go ' "$gomod")
staging=$(sed -n 's|^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*|\2|p' "$gomod")
if [ -z "$staging" ]; then
  echo "kube-apiserver.sh: no staging replacements found in $gomod" >&2
  exit 1
fi

{
  echo "module petrel.invalid/kube-apiserver-build"
  echo
  echo "$go_line"
  grep '^godebug ' "$gomod" || true
  echo
  echo "require k8s.io/kubernetes $version"
} >go.mod
for m in $staging; do
  "$go" mod edit -replace="$m=$m@$staging_version"
done
echo "kube-apiserver.sh: $(echo "$staging" | wc -l) staging modules at $staging_version"

ver=k8s.io/component-base/version
cver=k8s.io/client-go/pkg/version
minor=${version#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for p in $ver $cver; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
for t in "${targets[@]}"; do
  "$go" build -trimpath -ldflags="$ldflags" -o "$out/$t.tmp" "k8s.io/kubernetes/cmd/$t"
  mv "$out/$t.tmp" "$out/$t"
done

after=$(du -sk "$cache" | cut -f1)
echo "kube-apiserver.sh: built ${targets[*]} in ${out#"$repo"/}/ in $(($(date +%s) - start)) s" \
  "(module downloads $(((after - before) / 1024)) MiB; kube-apiserver $(($(stat -c %s "$bin") / 1048576)) MiB)"
