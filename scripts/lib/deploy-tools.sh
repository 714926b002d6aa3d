# shellcheck shell=bash
# Shared by scripts/test, scripts/package-deb and scripts/build-image: the tools that build and
# check what `deploy/` ships. Debian packages come from apt-get, the Rust target from rustup,
# cargo-deb from crates.io and kubernetes-validate from PyPI; the last two are kept under
# target/deploy-tools so that a machine installs each once.
#
# Functions:
#   oe_install_deploy_tools    everything the tests of deploy/ need (scripts/test calls it)
#   oe_install_static_build    musl-gcc and the Rust musl target, for the static binary
#   oe_install_container_tools podman and runc, to build and run the image
#   oe_install_checkers        promtool, man, and kubernetes-validate in a venv
#   oe_cargo_deb               print the path of cargo-deb, installing it first if needed
#   oe_build_dist              build the static binary
#   oe_package_assets DIR      write the man pages and shell completions into DIR
#   oe_dist_dir                print the folder the static binary is built into

# Versions pinned so that a check means the same thing on every machine.
OE_CARGO_DEB_VERSION=3.8.0
OE_KUBERNETES_VALIDATE_VERSION=1.37.0
OE_DIST_TARGET=x86_64-unknown-linux-musl
OE_DIST_PROFILE=dist

# oe_log and oe_sudo come from services.sh.
if ! declare -F oe_log >/dev/null; then
  # shellcheck source=scripts/lib/services.sh
  . "$(dirname "${BASH_SOURCE[0]}")/services.sh"
fi

oe_target_dir() { printf '%s\n' "${CARGO_TARGET_DIR:-$PWD/target}"; }

oe_deploy_tools_dir() { printf '%s/deploy-tools\n' "$(oe_target_dir)"; }

# apt-get install the Debian packages named, if any.
oe_apt_install() {
  [ "$#" -eq 0 ] && return 0
  oe_log "installing $*"
  oe_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  oe_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

oe_install_static_build() {
  local missing=()
  command -v musl-gcc >/dev/null 2>&1 || missing+=(musl-tools)
  oe_apt_install "${missing[@]}"
  if ! rustup target list --installed 2>/dev/null | grep -qx "$OE_DIST_TARGET"; then
    oe_log "adding the Rust target $OE_DIST_TARGET"
    rustup target add "$OE_DIST_TARGET" >/dev/null
  fi
}

oe_install_container_tools() {
  local missing=()
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  # runc rather than crun: crun refuses hosts whose cgroups are mounted in hybrid mode.
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  oe_apt_install "${missing[@]}"
}

oe_install_checkers() {
  oe_install_promtool
  local missing=()
  command -v man >/dev/null 2>&1 || missing+=(man-db)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  oe_apt_install "${missing[@]}"
  local venv
  venv="$(oe_deploy_tools_dir)/venv"
  if "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qF "$OE_KUBERNETES_VALIDATE_VERSION"; then
    return 0
  fi
  oe_log "installing kubernetes-validate $OE_KUBERNETES_VALIDATE_VERSION into $venv"
  rm -rf "$venv"
  # Debian's own python3 makes venvs only with python3-venv installed.
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    oe_apt_install python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$OE_KUBERNETES_VALIDATE_VERSION"
}

oe_install_deploy_tools() {
  oe_install_static_build
  oe_install_container_tools
  oe_install_checkers
}

oe_cargo_deb() {
  local root bin
  root="$(oe_deploy_tools_dir)/cargo"
  bin="$root/bin/cargo-deb"
  if ! "$bin" --version 2>/dev/null | grep -qF "$OE_CARGO_DEB_VERSION"; then
    # A few minutes, once per machine: the binary stays under target/.
    oe_log "installing cargo-deb $OE_CARGO_DEB_VERSION into $root"
    cargo install --locked --quiet --root "$root" "cargo-deb@$OE_CARGO_DEB_VERSION"
  fi
  printf '%s\n' "$bin"
}

oe_dist_dir() { printf '%s/%s/%s\n' "$(oe_target_dir)" "$OE_DIST_TARGET" "$OE_DIST_PROFILE"; }

# The binary operators run: static, so it needs no libc of the host or of the image.
oe_build_dist() {
  oe_install_static_build
  oe_log "building the static binary ($OE_DIST_TARGET, profile $OE_DIST_PROFILE)"
  cargo build --locked --quiet --profile "$OE_DIST_PROFILE" --target "$OE_DIST_TARGET" \
    --bin order-expire
}

# Writes the man pages and shell completions into the folder given, generated from the command
# line by examples/package_assets.rs. A debug build for this machine, apart from the static one:
# the example's dev-dependencies would otherwise switch on features (tokio's test-util) in the
# binary that ships; `cargo test --all-targets` has usually built it already.
oe_package_assets() {
  cargo build --locked --quiet --example package_assets
  "$(oe_target_dir)/debug/examples/package_assets" "$1"
}
