# shellcheck shell=bash
# The server matrix (scripts/test --matrix): the tests where servers differ, run against every
# Redis and Valkey of scripts/lib/servers.sh with MariaDB 10.11, and against every database
# with Redis 7.0; then docs/tested-with.md, written from what passed.
#
# Each configuration (a Redis-protocol server and a database server) is one job: it starts its
# own database server (scripts/lib/servers.sh: oe_db_server_start), runs the chosen tests of
# each suite with ORDER_EXPIRE_TEST_REDIS_SERVER and ORDER_EXPIRE_TEST_DB naming its servers,
# and stops the database server. ORDER_EXPIRE_MATRIX_JOBS jobs (3 by default) run at once: the
# tests mostly wait for servers and deadlines, so a 2-core machine runs three well.
#
# A test asked for that did not run (a renamed test) fails the matrix like a failed test.
#
# Functions:
#   oe_matrix_run [NAME...]   fetch the servers, build the tests once, run every configuration
#                             (only those with a server of NAMES when given), write
#                             docs/tested-with.md when all of them ran and passed

# The tests of each group, as "SUITE: TEST..." lines (the names of tests/SUITE.rs).
#
# redis: what depends on the Redis-protocol server: keyspace events and subscriptions, restarts,
# FLUSHDB, the output-buffer limit, CONFIG, SCAN for the sweep, the redis queue and the outbox,
# schedule's keys, Laravel's own phpredis, ACL users, readiness, status's PUBSUB NUMSUB.
oe_matrix_group_redis() {
  cat <<'EOF'
worker: two_hundred_expired_orders_are_cancelled_and_their_stock_returned a_killed_subscription_is_restored app_name_and_cache_db_decide_the_key_and_channel keys_of_other_apps_types_or_with_bad_ids_change_nothing
recovery: orders_whose_keys_died_with_a_redis_restart_are_cancelled_at_their_deadline flushdb_of_the_cache_database_is_recovered a_subscriber_cut_off_for_falling_behind_is_detected_and_recovered sweep_command_reports_then_cancels_missed_orders a_silently_dead_subscription_is_detected_and_replaced
jobs: redis_queue_burst_runs_every_cancelled_orders_job other_key_type_redis_queue_runs_its_job_with_the_id
check: check_names_each_servers_family_and_own_version check_reports_settings_and_healthy_connections check_prints_json_and_fails_when_a_server_is_wrong check_shows_the_redis_topology
startup: notifications_off_is_explained_and_configure_redis_fixes_it where_config_is_forbidden_the_worker_warns_and_still_works unreachable_redis_is_one_line_naming_host_and_cause
schedule: schedule_writes_laravels_key_in_the_cache_database schedule_follows_prefixes_and_serializes_other_values
tls: an_acl_user_with_only_the_documented_permissions_runs_the_worker an_acl_user_missing_a_permission_stops_the_start_in_one_line
metrics: readyz_follows_the_redis_subscription
laravel_app: orders_placed_by_laravel_with_default_prefixes_are_cancelled
status: ok_with_a_worker_running_and_its_endpoint_read_from_the_settings notifications_turned_off_under_a_running_worker_are_degraded
EOF
}

# redis-tls: TLS with client certificates, on servers built with TLS.
oe_matrix_group_redis_tls() {
  cat <<'EOF'
tls: over_tls_with_a_client_certificate_and_verification_every_unpaid_order_is_cancelled_once a_wrong_ca_stops_the_start_in_one_line_and_verify_peer_off_connects_anyway
EOF
}

# topology: Cluster and Sentinel (replication, failover, slot migration, per-node events).
oe_matrix_group_topology() {
  cat <<'EOF'
cluster: each_expiry_is_published_only_by_the_master_holding_the_key every_unpaid_order_is_cancelled_once_through_a_cluster_failover_and_a_slot_migration
sentinel: after_a_failover_only_the_promoted_replica_publishes_expiries every_unpaid_order_is_cancelled_once_through_a_sentinel_failover
topology_source: every_master_of_a_cluster_is_heard_and_each_order_is_cancelled_once a_sentinel_failover_is_followed_to_the_new_master
EOF
}

# database: what depends on the database server: the write path and row locks, replicas'
# named locks and row counters, the jobs table and the outbox, the schema and start-up checks,
# session settings and time zones, a restart of the server, TLS to it, PHP's pdo_mysql,
# status's bounded counts and the member slots it reads.
oe_matrix_group_database() {
  cat <<'EOF'
worker: two_hundred_expired_orders_are_cancelled_and_their_stock_returned paid_orders_stay_paid_and_keep_their_stock two_workers_return_stock_exactly_once order_lines_in_an_items_table_return_each_products_stock updated_at_is_written_in_the_app_time_zone
write_path: an_order_the_app_holds_is_skipped_then_written_when_it_lets_go lock_wait_waits_for_the_app_as_every_server_can
replicas: two_workers_split_a_burst_and_write_each_order_once a_worker_killed_mid_burst_leaves_its_orders_to_the_survivor a_worker_alone_writes_every_order_as_before more_workers_lock_no_more_rows_than_one
recovery: mariadb_restarted_in_the_middle_of_a_burst_loses_nothing kill_9_in_the_middle_of_a_10k_burst_then_restart_loses_nothing
jobs: database_queue_burst_runs_one_job_per_cancelled_order database_queue_two_workers_write_one_job_per_order redis_queue_burst_runs_every_cancelled_orders_job a_queue_order_expire_cannot_write_is_refused_at_start a_missing_outbox_or_jobs_table_stops_the_start_with_the_migration_to_run other_key_type_database_queue_runs_its_job_with_the_id
check: check_names_each_servers_family_and_own_version check_reports_settings_and_healthy_connections check_prints_json_and_fails_when_a_server_is_wrong check_says_which_index_the_sweep_needs
startup: wrong_mysql_password_is_one_line_naming_host_and_cause a_missing_table_is_named
contract: a_paid_column_that_does_not_exist_is_refused_at_start stop_timeout_is_a_deadline_while_a_write_waits_on_a_row_lock a_status_that_does_not_fit_the_column_is_refused_at_start an_order_that_fails_permanently_is_parked_and_blocks_no_other
tls: mysql_over_tls_with_the_pdo_ssl_options_and_a_user_that_requires_a_certificate
metrics: readyz_says_when_mysql_does_not_answer the_backlog_shows_orders_waiting_behind_a_blocked_writer
laravel_app: orders_placed_by_laravel_with_default_prefixes_are_cancelled orders_placed_by_laravel_on_a_connection_with_a_time_zone_get_eloquents_updated_at
status: ok_with_a_worker_running_and_its_endpoint_read_from_the_settings overdue_orders_are_counted_with_the_oldest_ones_lateness an_outbox_backlog_is_counted_and_a_stale_one_is_degraded
EOF
}

# Cluster and Sentinel run on these (the oldest Redis, the newest Redis 8, a Valkey).
OE_MATRIX_TOPOLOGY_SERVERS=" redis-6.2 redis-8.2 valkey-9 "

# The configurations, one "REDIS DB GROUP..." line each, the longest first.
oe_matrix_configs() {
  local name family tls
  for name in "${OE_SERVER_NAMES[@]}"; do
    family=$(cat "$(oe_server_dir "$name")/family")
    case "$family" in
      redis | valkey)
        local groups=redis
        [ "$name" = redis-7.0 ] && groups="$groups database"
        tls=$(cat "$(oe_server_dir "$name")/tls")
        [ "$tls" = yes ] && groups="$groups redis_tls"
        case "$OE_MATRIX_TOPOLOGY_SERVERS" in *" $name "*) groups="topology $groups" ;; esac
        printf '%s mariadb-10.11 %s\n' "$name" "$groups"
        ;;
      *)
        [ "$name" = mariadb-10.11 ] || printf 'redis-7.0 %s database\n' "$name"
        ;;
    esac
  done | awk '{ print (($3 == "topology") ? 0 : ($0 ~ /database/ ? 1 : 2)) " " $0 }' | sort -s -n -k1,1 | cut -d' ' -f2-
}

# The test executables, as "SUITE PATH" lines, built once.
oe_matrix_build() {
  cargo test --locked --no-run --tests --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
'
}

# Runs one configuration; its results as "REDIS DB SUITE TEST ok|FAILED|missing" lines in
# OUT/results, each suite's output in OUT/SUITE.log.
oe_matrix_job() {
  local redis=$1 db=$2 out=$3 bins=$4
  shift 4
  mkdir -p "$out"
  : >"$out/results"
  local started server pid url
  started=$(date +%s)
  server=$(oe_db_server_start "$db" "$out/db") || {
    echo "$redis $db server - FAILED" >>"$out/results"
    return 1
  }
  pid=${server%% *}
  url=${server#* }
  local group suite tests bin status=0
  for group in "$@"; do
    while IFS=: read -r suite tests; do
      bin=$(awk -v s="$suite" '$1 == s { print $2 }' "$bins")
      # shellcheck disable=SC2086
      ORDER_EXPIRE_TEST_REDIS_SERVER=$redis ORDER_EXPIRE_TEST_DB=$db ORDER_EXPIRE_TEST_MYSQL_URL=$url \
        "$bin" --exact $tests >"$out/$suite.$group.log" 2>&1 || status=1
      local test
      for test in $tests; do
        if grep -qx "test $test \.\.\. ok" "$out/$suite.$group.log"; then
          echo "$redis $db $suite $test ok"
        elif grep -q "^test $test \.\.\. " "$out/$suite.$group.log"; then
          echo "$redis $db $suite $test FAILED"
          status=1
        else
          echo "$redis $db $suite $test missing"
          status=1
        fi
      done >>"$out/results"
    done < <("oe_matrix_group_$group")
  done
  oe_db_server_stop "$pid"
  # The datadir is a few hundred MB; its error log stays for a failure's reader.
  rm -rf "$out/db/data"
  oe_slog "matrix: $redis + $db: $(grep -c ' ok$' "$out/results") passed, $(grep -vc ' ok$' "$out/results") failed, $(($(date +%s) - started)) s"
  return "$status"
}

oe_matrix_run() {
  local started out
  started=$(date +%s)
  out="$PWD/target/matrix"
  rm -rf "$out" && mkdir -p "$out"
  oe_servers_fetch || return 1
  oe_slog "matrix: building the tests"
  oe_matrix_build >"$out/bins" || return 1
  local jobs=${ORDER_EXPIRE_MATRIX_JOBS:-3} running=0 failed=0
  local redis db groups
  local only=" $* "
  while read -r redis db groups; do
    if [ "$#" -gt 0 ] && [[ "$only" != *" $redis "* ]] && [[ "$only" != *" $db "* ]]; then
      continue
    fi
    if [ "$running" -ge "$jobs" ]; then
      wait -n || failed=1
      running=$((running - 1))
    fi
    # shellcheck disable=SC2086
    oe_matrix_job "$redis" "$db" "$out/$redis+$db" "$out/bins" $groups &
    running=$((running + 1))
  done < <(oe_matrix_configs)
  while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
  done
  cat "$out"/*/results >"$out/results"
  local took=$(($(date +%s) - started))
  if [ "$failed" -ne 0 ] || grep -qv ' ok$' "$out/results"; then
    oe_slog "matrix: FAILED after $took s:"
    grep -v ' ok$' "$out/results" >&2
    oe_slog "each suite's output: $out/<redis>+<db>/<suite>.<group>.log"
    return 1
  fi
  if [ "$#" -gt 0 ]; then
    oe_slog "matrix: $(wc -l <"$out/results") tests passed in $took s (a part of the matrix: docs/tested-with.md left as it is)"
    return 0
  fi
  oe_matrix_write_docs "$out/results" "$took" >docs/tested-with.md
  oe_slog "matrix: $(wc -l <"$out/results") tests passed in $took s; docs/tested-with.md written"
}

# docs/tested-with.md from RESULTS (every line "REDIS DB SUITE TEST ok") and the run's time.
oe_matrix_write_docs() {
  local results=$1 took=$2 name family with
  cat <<EOF2
# Tested with

Written by \`scripts/test --matrix\` from what its last complete run passed (do not edit by
hand; CI runs it in \`.ci/run\`). Each Redis and Valkey ran with MariaDB 10.11, each database with
Redis 7.0; the servers are fetched and started by \`scripts/servers\` (\`scripts/lib/servers.sh\`
says where each comes from). What each family needs from an operator, and what the worker does
differently on it, is in [servers.md](servers.md).

| server | version | from | with | tests passed, by suite |
|---|---|---|---|---|
EOF2
  for name in "${OE_SERVER_NAMES[@]}"; do
    family=$(cat "$(oe_server_dir "$name")/family")
    case "$family" in
      redis | valkey) with="MariaDB 10.11" ;;
      *) with="Redis 7.0" ;;
    esac
    local suites
    suites=$(awk -v n="$name" -v f="$family" '
      (f == "redis" || f == "valkey") && $1 == n && $2 == "mariadb-10.11" && $5 == "ok" { c[$3]++ }
      f != "redis" && f != "valkey" && $2 == n && $1 == "redis-7.0" && $5 == "ok" { c[$3]++ }
      END { for (s in c) printf "%s %d\n", s, c[s] }' "$results" | sort | awk '{ printf "%s%s %d", (NR > 1 ? ", " : ""), $1, $2 }')
    local note=""
    if [ -f "$(oe_server_dir "$name")/tls" ] && [ "$(cat "$(oe_server_dir "$name")/tls")" = no ]; then
      note="; TLS not run (this build has none)"
    fi
    case "$OE_MATRIX_TOPOLOGY_SERVERS $family" in
      *" $name "*) ;;
      *" redis" | *" valkey") note="$note; Cluster and Sentinel not run on this version" ;;
    esac
    printf '| %s | %s | %s | %s | %s%s |\n' "$(oe_family_title "$family")" "$(cat "$(oe_server_dir "$name")/version")" \
      "$(cat "$(oe_server_dir "$name")/source")" "$with" "$suites" "$note"
  done
  printf '\n%s tests in %s configurations, %s s on a 2-core machine (the servers already fetched:\nthe first fetch of all of them takes about 80 s). The `tls` suite also holds the ACL tests, run on\nevery server.\n' \
    "$(wc -l <"$results")" "$(awk '{ print $1, $2 }' "$results" | sort -u | wc -l)" "$took"
}

oe_family_title() {
  case "$1" in
    redis) echo Redis ;;
    valkey) echo Valkey ;;
    mariadb) echo MariaDB ;;
    mysql) echo MySQL ;;
  esac
}
