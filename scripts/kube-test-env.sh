#!/usr/bin/env bash
# Provides the kube-apiserver and etcd binaries that the `kube` backend's tests run against.
#
#   scripts/kube-test-env.sh          ensure both binaries exist, print their paths
#   scripts/kube-test-env.sh --env    the same, printed as `export` lines for `eval`
#
# When ENDSTATE_TEST_KUBE_APISERVER and ENDSTATE_TEST_ETCD name executables (envtest assets,
# a distribution's packages), those are used as they are. Otherwise etcd comes from Debian's
# `etcd-server` package and kube-apiserver 1.20.2 is built from Debian's `kubernetes` source
# package, once: the binary is cached in ${XDG_CACHE_HOME:-~/.cache}/endstate/ and later runs
# only check it. Every step that cannot succeed stops the script with a message saying why.
set -euo pipefail

KUBE_VERSION=1.20.2
# Bumped whenever the build below changes, so that a binary cached by an older recipe is rebuilt.
RECIPE=3
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/endstate"
APISERVER_BIN="$CACHE_DIR/kube-apiserver-$KUBE_VERSION-r$RECIPE"
GOCODE=/usr/share/gocode/src

log() { echo "kube-test-env: $*" >&2; }
die() {
  echo "kube-test-env: error: $*" >&2
  exit 1
}

mode=paths
case "${1:-}" in
  "") ;;
  --env) mode=env ;;
  -h | --help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument '$1' (expected --env or nothing)" ;;
esac

emit() {
  local apiserver=$1 etcd=$2
  if [[ $mode == env ]]; then
    printf 'export ENDSTATE_TEST_KUBE_APISERVER=%q\nexport ENDSTATE_TEST_ETCD=%q\n' "$apiserver" "$etcd"
    # Tells the caller whether the package lists are fresh, so it need not update them again.
    printf 'export ENDSTATE_APT_UPDATED=%q\n' "${apt_updated:-no}"
  else
    printf 'ENDSTATE_TEST_KUBE_APISERVER=%s\nENDSTATE_TEST_ETCD=%s\n' "$apiserver" "$etcd"
  fi
}

# Binaries given by the caller win; they must exist, a typo must not fall back silently.
if [[ -n ${ENDSTATE_TEST_KUBE_APISERVER:-} || -n ${ENDSTATE_TEST_ETCD:-} ]]; then
  [[ -n ${ENDSTATE_TEST_KUBE_APISERVER:-} && -n ${ENDSTATE_TEST_ETCD:-} ]] ||
    die "set both ENDSTATE_TEST_KUBE_APISERVER and ENDSTATE_TEST_ETCD, or neither"
  [[ -x $ENDSTATE_TEST_KUBE_APISERVER ]] ||
    die "ENDSTATE_TEST_KUBE_APISERVER=$ENDSTATE_TEST_KUBE_APISERVER is not an executable file"
  [[ -x $ENDSTATE_TEST_ETCD ]] || die "ENDSTATE_TEST_ETCD=$ENDSTATE_TEST_ETCD is not an executable file"
  emit "$ENDSTATE_TEST_KUBE_APISERVER" "$ENDSTATE_TEST_ETCD"
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=()
fi

apt_updated=${ENDSTATE_APT_UPDATED:-no}
apt_update() {
  if [[ $apt_updated == no ]]; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    apt_updated=yes
  fi
}

# Installs the Debian packages that are not installed yet; nothing when all are.
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "packages ${missing[*]} are needed and apt-get is not available; set ENDSTATE_TEST_KUBE_APISERVER and ENDSTATE_TEST_ETCD instead"
  [[ $(id -u) -eq 0 || ${#SUDO[@]} -gt 0 ]] ||
    die "packages ${missing[*]} are needed and installing them needs root (or sudo)"
  apt_update
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    die "apt-get install ${missing[*]} failed"
}

# `apt-get source` needs a deb-src entry; add one mirroring the binary sources when none exists.
ensure_deb_src() {
  if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return 0
  fi
  local binary=/etc/apt/sources.list.d/debian.sources
  [[ -f $binary ]] || die "no deb-src entry and no $binary to derive one from; add a deb-src line for Debian bookworm"
  log "adding a deb-src entry (/etc/apt/sources.list.d/debian-src.sources)"
  sed 's/^Types:.*/Types: deb-src/' "$binary" | "${SUDO[@]}" tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
  apt_updated=no
}

build_apiserver() {
  apt_install golang-go rsync dpkg-dev make golang-github-modern-go-reflect2-dev
  apt_update

  local work="$CACHE_DIR/build"
  rm -rf "$work"
  mkdir -p "$work"
  log "fetching Debian's kubernetes source package into $work"
  (cd "$work" && apt-get source -qq kubernetes >&2) || die "apt-get source kubernetes failed"
  local src
  src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
  [[ -n $src && -f $src/go.mod ]] || die "no kubernetes source tree under $work"

  # The vendored reflect2 1.0.1 reads Go's internal map layout and crashes (SIGSEGV in map
  # iteration on the first custom resource writes) with Go >= 1.18; 1.0.2 fixes it.
  local reflect2=github.com/modern-go/reflect2
  [[ -d $GOCODE/$reflect2 ]] || die "$GOCODE/$reflect2 is missing after installing its Debian package"
  log "replacing the vendored $reflect2 with Debian's 1.0.2"
  rsync -a --delete --exclude '.git' "$GOCODE/$reflect2/" "$src/vendor/$reflect2/" ||
    die "replacing vendor/$reflect2 failed"

  # The OpenAPI type validator tests "is this null?" with reflect.DeepEqual on two
  # reflect.Values. With Debian's Go, reflect.Zero and a zero value in an interface share one
  # pointer, so the test also holds for "", 0 and false, and the server refuses a required
  # field holding one (`message: ""` in a condition). With the Go that Kubernetes 1.20 was
  # released with, the pointers always differed and the test amounted to `data == nil`.
  local validator
  for validator in k8s.io/kube-openapi/pkg/validation/validate github.com/go-openapi/validate; do
    local file="$src/vendor/$validator/type.go"
    grep -q 'if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {' "$file" ||
      die "$file does not hold the null test this script patches"
    sed -i 's/if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), reflect.ValueOf(data)) {/if data == nil {/' "$file"
    log "patched the null test of $validator"
  done

  # The build runs in GOPATH mode, the tree must sit at k8s.io/kubernetes inside a GOPATH.
  mkdir -p "$src/.go/src/k8s.io"
  ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
  # No .git in a source package: give the version the server reports explicitly.
  cat >"$src/.version-vars" <<EOF
KUBE_GIT_COMMIT=''
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v$KUBE_VERSION'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='$(cut -d. -f2 <<<"$KUBE_VERSION")'
EOF

  log "building kube-apiserver $KUBE_VERSION (about 10 minutes on 2 cores; log: $work/build.log)"
  if ! (cd "$src/.go/src/k8s.io/kubernetes" &&
    GOPATH="$src/.go" CGO_ENABLED=0 KUBE_GIT_VERSION_FILE="$src/.version-vars" \
      make WHAT=cmd/kube-apiserver >"$work/build.log" 2>&1); then
    tail -n 40 "$work/build.log" >&2
    die "building kube-apiserver failed (full log: $work/build.log)"
  fi
  local built="$src/_output/local/bin/linux/amd64/kube-apiserver"
  [[ -x $built ]] || built=$(find "$src/_output" -type f -name kube-apiserver -perm -u+x | head -n 1)
  [[ -n $built && -x $built ]] || die "the build succeeded but produced no kube-apiserver under $src/_output"
  "$built" --version >&2 || die "the built kube-apiserver does not run"
  cp "$built" "$APISERVER_BIN.tmp"
  mv "$APISERVER_BIN.tmp" "$APISERVER_BIN"
  rm -rf "$work"
  # Binaries of older recipes are never used again.
  find "$CACHE_DIR" -maxdepth 1 -type f -name 'kube-apiserver-*' ! -path "$APISERVER_BIN" -delete
  log "cached $APISERVER_BIN"
}

mkdir -p "$CACHE_DIR"
# One provisioning at a time: a second run waits for the first instead of building twice.
exec 9>"$CACHE_DIR/.lock"
flock 9 || die "cannot lock $CACHE_DIR/.lock"

need_build=yes
if [[ -x $APISERVER_BIN ]] && "$APISERVER_BIN" --version >/dev/null 2>&1; then
  need_build=no
fi
# Before any apt-get update, so that one update fetches the source index too.
[[ $need_build == yes ]] && ensure_deb_src

# openssl makes the test server's service-account key.
apt_install etcd-server openssl
ETCD_BIN=$(command -v etcd || true)
[[ -n $ETCD_BIN ]] || ETCD_BIN=/usr/bin/etcd
[[ -x $ETCD_BIN ]] || die "etcd is not on PATH after installing etcd-server"

if [[ $need_build == yes ]]; then
  build_apiserver
else
  log "using the cached $APISERVER_BIN"
fi

emit "$APISERVER_BIN" "$ETCD_BIN"
