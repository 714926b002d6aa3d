# shellcheck shell=bash
# Shared by scripts/test, scripts/demo and .ci/run: make sure redis-server and MariaDB are
# installed and running, and remember what we started so that we can stop exactly that.
#
# Functions:
#   oe_install_packages        apt-get install what is missing (redis-server, mariadb-server,
#                              postgresql, openssl, php-cli, php-pgsql and Debian's Laravel 8
#                              for the parity tests,
#                              promtool from Debian's prometheus for the metrics tests,
#                              iproute2 and iptables for the network-namespace faults)
#   oe_start_mariadb           start MariaDB if nothing answers on 127.0.0.1:3306
#   oe_stop_started_services   stop what oe_start_mariadb started (for a trap on EXIT)
#   oe_test_mysql_url          print a URL the tests may create oe_test_% databases with

OE_STARTED_MARIADB_PID=""

oe_log() { printf '==> %s\n' "$*" >&2; }

oe_sudo() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    oe_log "need root for: $*"
    return 1
  fi
}

oe_install_packages() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  # The Sentinel failover tests run three sentinels next to a master and its replica.
  command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
  # The TLS tests make their CA and certificates with the openssl command.
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
  command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
  command -v mariadb-install-db >/dev/null 2>&1 || missing+=(mariadb-server)
  # PostgreSQL 15's server programs: the tests of apps on DB_CONNECTION=pgsql run a private
  # cluster with initdb and postgres (tests/common/pgsql.rs), never the packaged service.
  [ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql)
  # PHP and Debian's Laravel 8, for the tests that compare order-expire with Laravel itself.
  command -v php >/dev/null 2>&1 || missing+=(php-cli)
  [ -f /usr/share/php/Illuminate/autoload.php ] || missing+=(php-laravel-framework)
  # predis, for Laravel's own resolution of predis clusters and sentinel connections.
  [ -f /usr/share/php/Predis/Autoloader.php ] || missing+=(php-nrk-predis)
  php -m 2>/dev/null | grep -qx redis || missing+=(php-redis)
  php -m 2>/dev/null | grep -qx pdo_mysql || missing+=(php-mysql)
  php -m 2>/dev/null | grep -qx pdo_pgsql || missing+=(php-pgsql)
  php -m 2>/dev/null | grep -qx mbstring || missing+=(php-mbstring)
  # The kernel-level faults of tests/faults_db.rs: a network namespace, a veth pair, iptables
  # rules inside it.
  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
  command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
  if [ "${#missing[@]}" -gt 0 ]; then
    oe_log "installing ${missing[*]}"
    oe_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    oe_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  oe_install_promtool
}

# promtool, Prometheus's own parser, checks the worker's /metrics (tests/metrics.rs). Debian
# ships it in the prometheus package, with the Prometheus server, which the installation may
# start: only promtool is wanted, so a server that installation started is stopped and disabled
# again, and the recommended node exporter is not installed.
oe_install_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  oe_log "installing prometheus (for promtool)"
  oe_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  oe_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if pidof prometheus >/dev/null 2>&1; then
    oe_log "stopping the Prometheus server the package started (only promtool is used)"
    if [ -d /run/systemd/system ]; then
      oe_sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
    else
      oe_sudo service prometheus stop >/dev/null 2>&1 || true
    fi
  fi
}

oe_mariadb_answers() {
  mariadb-admin --protocol=tcp -h127.0.0.1 -P3306 -uroot --connect-timeout=2 ping >/dev/null 2>&1 \
    || mariadb-admin --connect-timeout=2 ping 2>&1 | grep -q -e 'is alive' -e 'Access denied'
}

oe_start_mariadb() {
  if oe_mariadb_answers; then
    return 0
  fi
  oe_log "starting MariaDB"
  oe_sudo mkdir -p /run/mysqld
  oe_sudo chown mysql:mysql /run/mysqld 2>/dev/null || true
  if ! oe_sudo service mariadb start >/dev/null 2>&1; then
    oe_sudo start-stop-daemon --start --oknodo --background \
      --pidfile /run/mysqld/order-expire-ci.pid --make-pidfile --exec /usr/sbin/mariadbd
    OE_STARTED_MARIADB_PID=$(cat /run/mysqld/order-expire-ci.pid 2>/dev/null || true)
  else
    OE_STARTED_MARIADB_PID="service"
  fi
  local i
  for i in $(seq 1 60); do
    if oe_mariadb_answers; then
      return 0
    fi
    sleep 0.5
  done
  oe_log "MariaDB did not start within 30 s"
  return 1
}

oe_stop_started_services() {
  case "$OE_STARTED_MARIADB_PID" in
    "") ;;
    service) oe_log "stopping MariaDB"; oe_sudo service mariadb stop >/dev/null 2>&1 || true ;;
    *) oe_log "stopping MariaDB"; oe_sudo kill "$OE_STARTED_MARIADB_PID" 2>/dev/null || true ;;
  esac
  OE_STARTED_MARIADB_PID=""
}

oe_test_mysql_url() {
  if [ -n "${ORDER_EXPIRE_TEST_MYSQL_URL:-}" ]; then
    printf '%s\n' "$ORDER_EXPIRE_TEST_MYSQL_URL"
    return 0
  fi
  if mariadb --protocol=tcp -h127.0.0.1 -P3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    printf '%s\n' "mysql://root@127.0.0.1:3306"
    return 0
  fi
  # A fresh Debian MariaDB lets root in through the socket only: create a test account that may
  # create and drop the tests' own databases.
  oe_log "creating the MariaDB account order_expire_test for the tests"
  oe_sudo mariadb <<'SQL'
CREATE USER IF NOT EXISTS 'order_expire_test'@'127.0.0.1' IDENTIFIED BY 'order_expire_test';
CREATE USER IF NOT EXISTS 'order_expire_test'@'localhost' IDENTIFIED BY 'order_expire_test';
GRANT ALL PRIVILEGES ON `oe\_test\_%`.* TO 'order_expire_test'@'127.0.0.1';
GRANT ALL PRIVILEGES ON `oe\_test\_%`.* TO 'order_expire_test'@'localhost';
SQL
  printf '%s\n' "mysql://order_expire_test:order_expire_test@127.0.0.1:3306"
}
