# The scale curves: how a path's cost grows with the size of what it works on. Sourced by
# benches/load.sh (`bash benches/load.sh curve ledger|sync`), whose helpers it uses.
#
# curve ledger: N finished orders seeded (orders, their charge and refund entries, a balance
#   that is their sum), then: `add` throughput (wrk, closed loop), `status` p50/p99 of orders
#   drawn from the whole ledger, none twice (loadkit latency --once, fixed rate), both after
#   WARMUP seconds unmeasured and with the share of CPU time the hypervisor stole meanwhile
#   (`*_steal_pct`, from /proc/stat: a take with much of it measured the host), `panelgate
#   order list --state unknown` and `panelgate client list` (wall time of the command, best of
#   3), the admin API's
#   `GET /admin/api/v1/orders?limit=50` and `/customers?limit=50` (best of 5), and the bytes on
#   disk per order (the database's growth over the seeding, divided by N).
# curve sync: N placed orders in progress at the simulator and in the ledger; the gateway starts
#   and its first sync pass is timed (first status call to last order written) with the
#   gateway's CPU time, against the bound the upstream's rate limit sets: N / 100 / R seconds.
#   R is the upstream's `rate_limit` in the gateway's config (the requests per second the
#   upstream allows); each call asks about 100 orders.
# curve instances: 1 and then 2 gateways on one PostgreSQL database, instance i pinned to core
#   i-1 (each with its own journal file), the load split evenly between them: `add` throughput
#   (orders/s, wrk closed loop, CONNECTIONS split across the instances) and `status` throughput
#   (req/s, ids drawn at random over SEED finished orders, answered from the ledger), each as
#   a scaling factor against the one-instance run of the same command, with the CPU share
#   (percent of the machine) of postgres, the gateways, wrk and the simulator during each run.
#   The machine has two cores: wrk, the simulator and postgres share them with the gateways.
#
# curve catalog: a simulator listing N services; the gateway's catalog build time (its own
#   metric panelgate_catalog_build_seconds, read from /metrics after the first build), its RSS,
#   and the `services` reply's throughput (wrk, closed loop) against nginx serving the same
#   bytes saved from the gateway (checked byte for byte), plain and with Accept-Encoding: gzip.
# curve customers: N customers with API keys seeded into the database (hashed by the gateway's
#   own keys::hash); the gateway's RSS, and `services` (gzip, 100 services: after the key, an
#   answer from memory) latency at LAT_RATE: "cold", each key's first request (keys in order,
#   each used once); "hot", one key over and over; "spread", keys drawn at
#   random from all N. The baseline is the hot key at the smallest N, in the same run.
# curve soak: REQUESTS requests at RATE per second, open loop, on a ledger of SOAK_ORDERS
#   finished orders: `status` of one order (92 %) or of 100 (5 %), `add` (3 %), `services`
#   every 5 s; per WINDOW seconds: p50/p99, errors, the gateway's VmRSS. The table has RSS at
#   start and end, the worst window's p99 and every error; the plots are over time (linear x).
#
# Knobs: SIZES (ledger: "10000 100000 1000000", and 10000000 on SQLite unless SIZES is given;
# sync: "1000 10000 100000"; instances: "1 2"; catalog: "100 3000 30000"; customers: "10 10000
# 100000"), SIZES_SQLITE / SIZES_POSTGRES (one backend's sizes), BACKENDS ("sqlite postgres";
# catalog and soak: "sqlite"), SEED (instances: finished orders seeded, 100000), REQUESTS (soak,
# 1000000), WINDOW (soak, 10 s), SOAK_ORDERS (100000), PG (the PostgreSQL server,
# postgres://postgres@127.0.0.1:5432/postgres; databases
# named pgcurve_* are created and dropped), RATE (sync: R, 20), BEFORE_BIN (sync: another
# panelgate binary, e.g. one built from an older commit, measured beside this one in the same
# run), RATE (soak: requests/s, 1000), DURATION (seconds of wrk, 8), LAT_RATE (requests/s of
# the latency runs, 1000), LAT_SECONDS (10; ledger: fewer where the ledger has fewer orders),
# WARMUP (ledger: unmeasured seconds before each run, 2),
# OUT (where the table, the data and the plots go: benches/plots, or under the work dir with
# QUICK=1), QUICK=1 (tiny sizes, short runs, dev build: what CI runs so the scripts cannot rot).

PG="${PG:-postgres://postgres@127.0.0.1:5432/postgres}"
case "$curve" in
  catalog | soak) BACKENDS="${BACKENDS:-sqlite}" ;;
  *) BACKENDS="${BACKENDS:-sqlite postgres}" ;;
esac
if [ "${QUICK:-0}" = 1 ]; then
  case "$curve" in
    ledger) SIZES="${SIZES:-300 3000}" ;;
    sync) SIZES="${SIZES:-300 1000}" ;;
    instances) SIZES="${SIZES:-1 2}" SEED=${SEED:-1000} ;;
    catalog) SIZES="${SIZES:-100 1000}" ;;
    customers) SIZES="${SIZES:-10 1000}" ;;
    soak) SIZES="${REQUESTS:-3000}" ;;
  esac
  case "$curve" in
    soak) RATE="${RATE:-1000}" WINDOW="${WINDOW:-1}" SOAK_ORDERS="${SOAK_ORDERS:-1000}" ;;
    *) RATE="${RATE:-100}" ;;
  esac
  DURATION=2 LAT_RATE=100 LAT_SECONDS=2 WARMUP=0
  OUT="${OUT:-$dir/curves}"
else
  case "$curve" in
    ledger)
      if [ -z "${SIZES:-}" ]; then
        SIZES="10000 100000 1000000"
        # SQLite one step further: 10 M orders (about 6 GB on disk, some minutes of seeding).
        SIZES_SQLITE="${SIZES_SQLITE:-$SIZES 10000000}"
      fi
      ;;
    sync) SIZES="${SIZES:-1000 10000 100000}" ;;
    instances) SIZES="${SIZES:-1 2}" SEED=${SEED:-100000} ;;
    catalog) SIZES="${SIZES:-100 3000 30000}" ;;
    customers) SIZES="${SIZES:-10 10000 100000}" ;;
    soak) SIZES="${REQUESTS:-1000000}" ;;
  esac
  case "$curve" in
    soak) RATE="${RATE:-1000}" ;;
    *) RATE="${RATE:-20}" ;;
  esac
  OUT="${OUT:-$repo/benches/plots}"
fi
WINDOW="${WINDOW:-10}"
SOAK_ORDERS="${SOAK_ORDERS:-100000}"
mkdir -p "$OUT"
data="$OUT/$curve.tsv"
: >"$data"
# RUNTIME (instances: multi_thread or thread_per_core) sets the gateways' runtime model.
RUNTIME_YAML=""
[ -n "${RUNTIME:-}" ] && RUNTIME_YAML="runtime: { model: $RUNTIME }"
pg_dbs=()
curve_cleanup() {
  # KEEP=1 keeps the PostgreSQL databases too, for EXPLAIN and friends.
  [ "${KEEP:-0}" = 1 ] && return
  for db in "${pg_dbs[@]}"; do psql "$PG" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1; done
}
trap 'st=$?; set +e; curve_cleanup; (exit "$st"); cleanup' EXIT

# figure METRIC SERIES SIZE VALUE: one measured point.
figure() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$data"; }

# database BACKEND NAME: sets `db` to a fresh, empty database (SQLite: a file in the work dir;
# PostgreSQL: a URL, the database dropped again at exit).
database() {
  if [ "$1" = sqlite ]; then
    rm -f "$dir/$2.db" "$dir/$2.db-wal" "$dir/$2.db-shm"
    db="$dir/$2.db"
    return
  fi
  local name="pgcurve_$2"
  PGOPTIONS="-c client_min_messages=warning" psql "$PG" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null
  psql "$PG" -qc "CREATE DATABASE $name" >/dev/null
  pg_dbs+=("$name")
  db="${PG%/*}/$name"
}
url_of() { case "$1" in postgres*) echo "$1" ;; *) echo "sqlite://$1" ;; esac; }

# curve_config FILE DB [EXTRA]: a gateway on the simulator with one client; EXTRA is appended.
curve_config() {
  cat >"$1" <<EOF
listen: "127.0.0.1:0"
database: "$(url_of "$2")"
log_level: warn
status_max_age: 1h
config_poll: 0s
upstreams:
  - name: sim
    url: "$SIM_URL"
    key: "$SIM_KEY"
    max_concurrency: 256
${4:-}
services:
  - import: sim
    id_offset: $OFFSET
    markup: { percent: 40 }
clients:
  - name: bench
    key: "$KEY"
    balance: "1000000000"
limits:
  per_client: { per_second: 1000000, burst: 1000000 }
  # Reads have their own allowance: the rows measure answers, not the over-limit path.
  per_client_reads: { per_second: 1000000, burst: 1000000 }
  failed_keys_per_minute: 1000000
${3:-}
EOF
}

# best_ms N CMD...: the fastest of N runs of CMD, in milliseconds of wall time; fails (printing
# nothing) if a run fails.
best_ms() {
  local n=$1 best=""
  shift
  for _ in $(seq 1 "$n"); do
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null || return 1
    t1=$(date +%s%N)
    local us=$(((t1 - t0) / 1000))
    if [ -z "$best" ] || [ "$us" -lt "$best" ]; then best=$us; fi
  done
  awk -v us="$best" 'BEGIN { printf "%.1f", us / 1000 }'
}

# timed METRIC SERIES SIZE RUNS CMD...: best_ms as a figure; a failed run (an admin request
# past curl's 30 s, say) is a note instead.
# steal_ticks: the CPU time so far (all cores) that the hypervisor gave to other machines, and
# the total, as "STEAL TOTAL" (clock ticks, from /proc/stat).
steal_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t }' /proc/stat; }

# steal_pct "STEAL TOTAL" (from steal_ticks before a run): the share, in %, of the CPU time
# since that went to other machines: a take with much of it measured the host, not panelgate.
steal_pct() {
  local s0 t0 s1 t1
  read -r s0 t0 <<<"$1"
  read -r s1 t1 < <(steal_ticks)
  awk -v s="$((s1 - s0))" -v t="$((t1 - t0))" 'BEGIN { printf "%.1f", (t > 0 ? 100 * s / t : 0) }'
}

timed() {
  local metric=$1 series=$2 size=$3 runs=$4 ms
  shift 4
  if ms=$(best_ms "$runs" "$@"); then
    figure "$metric" "$series" "$size" "$ms"
  else
    notes+=("$metric, $series, $size: failed (no answer within 30 s, or an error): $*")
  fi
}

admin_get() { curl -sf --max-time 30 -H "Authorization: Bearer $ADMIN_TOKEN" "$1"; }

SIM_KEY=sim-key
KEY=load-bench-customer-key-0000000001
OFFSET=1000
start simulator "${ON_CLIENT[@]}" "$PANELGATE" --config "$dir/no-simulator.yaml" simulate \
  --listen 127.0.0.1:0 --key "$SIM_KEY" --services 100 --speed 1 --balance 1000000000000
SIM_PID=$started
SIM_URL=$(listening_on simulator "$started")
SIM_BASE=${SIM_URL%/api/v2}

# The service every order is for: the first Default one, at its minimum quantity.
post "$SIM_URL" -d "key=$SIM_KEY&action=services" -o "$dir/sim-services.json"
read -r UP_SERVICE QTY < <(jq -r '[.[] | select(.type == "Default")][0] | "\(.service) \(.min)"' "$dir/sim-services.json")
SERVICE=$((UP_SERVICE + OFFSET))

# ---- curve ledger ----

ledger_point() {
  local backend=$1 n=$2
  local db cfg admin_port
  database "$backend" "ledger_$n"
  cfg="$dir/ledger-$backend-$n.yaml"
  admin_port=$(free_port)
  curve_config "$cfg" "$db" "sync: { interval: 10m }
admin:
  listen: \"127.0.0.1:$admin_port\""
  say "ledger, $backend, $n orders: seeding"
  start_gateway "gateway-$backend-$n" "$cfg"
  post "$GW_URL" -d "key=$KEY&action=services" -o "$dir/services-$n.json"
  local rate_units
  rate_units=$(jq -r --argjson s "$SERVICE" '.[] | select(.service == $s) | .rate' "$dir/services-$n.json" |
    awk '{ printf "%.0f", $1 * 100000 }')
  stop "$gw_pid"
  local empty seeded
  empty=$("$LOADKIT" db-size --db "$db" | jq .bytes)
  local t0 t1
  t0=$(date +%s%N)
  "$LOADKIT" seed --db "$db" --client bench --orders "$n" --upstream sim --service "$SERVICE" \
    --upstream-service "$UP_SERVICE" --rate-units "$rate_units" >"$dir/seed-$backend-$n.json" || die "seeding failed"
  t1=$(date +%s%N)
  seeded=$("$LOADKIT" db-size --db "$db" | jq .bytes)
  # The seed's WAL would otherwise be checkpointed during the measurements (a million orders
  # are more than max_wal_size), and its writes counted as the ledger size's cost.
  if [ "$backend" = postgres ]; then
    psql "$PG" -qc CHECKPOINT >/dev/null 2>&1 || notes+=("ledger $backend $n: CHECKPOINT refused (not a superuser?)")
  fi
  figure bytes_per_order "$backend" "$n" "$(awk -v a="$seeded" -v b="$empty" -v n="$n" 'BEGIN { printf "%.0f", (a - b) / n }')"
  say "ledger, $backend, $n orders: seeded in $(((t1 - t0) / 1000000)) ms; measuring"
  ADMIN_TOKEN=$("$PANELGATE" --config "$cfg" admin token add "curve$n" --role read | tail -n 1)

  start_gateway "gateway-$backend-$n" "$cfg"
  local first last warm status=(latency --url "$GW_URL" --body "key=$KEY&action=status&order={id}")
  first=$(jq -r '.orders_in_db - .seeded + 1' "$dir/seed-$backend-$n.json")
  last=$(jq -r '.orders_in_db' "$dir/seed-$backend-$n.json")
  status+=(--rate "$LAT_RATE" --connections 8)
  # Unmeasured first: a gateway's first seconds (its pool's new connections, each a server
  # process with cold caches) cost as much at 10k orders as at 1M, and are not the ledger's.
  # On orders of their own, the first ones: the measured run asks each of the others at most
  # once, so that no answer comes from the status cache at any size (at 10k, ids drawn with
  # repeats were a third cache hits, at 1M almost none: the curve measured the cache).
  warm=$((WARMUP * LAT_RATE))
  if [ "$warm" -gt 0 ] && [ "$((first + warm))" -lt "$last" ]; then
    "${ON_CLIENT[@]}" "$LOADKIT" "${status[@]}" --ids "$first:$((first + warm - 1))" --in-order \
      --seconds "$WARMUP" >/dev/null || die "the status warm-up failed"
    first=$((first + warm))
  fi
  # Shorter than LAT_SECONDS where the ledger has fewer orders than that many requests.
  local seconds=$(((last - first + 1) / LAT_RATE))
  [ "$seconds" -le "$LAT_SECONDS" ] || seconds=$LAT_SECONDS
  if [ "$seconds" -lt 1 ]; then
    seconds=1
    notes+=("ledger $backend $n: fewer orders than a second of status requests: some were answered from the cache")
  fi
  figure status_seconds "$backend" "$n" "$seconds"
  local before
  before=$(steal_ticks)
  "${ON_CLIENT[@]}" "$LOADKIT" "${status[@]}" --ids "$first:$last" --once --seconds "$seconds" \
    >"$dir/status-$backend-$n.json" || die "the status run failed"
  figure status_steal_pct "$backend" "$n" "$(steal_pct "$before")"
  [ "$(jq .errors "$dir/status-$backend-$n.json")" = 0 ] || notes+=("ledger $backend $n: status errors $(jq .errors "$dir/status-$backend-$n.json")")
  figure status_p50_us "$backend" "$n" "$(jq .p50_us "$dir/status-$backend-$n.json")"
  figure status_p99_us "$backend" "$n" "$(jq .p99_us "$dir/status-$backend-$n.json")"

  before=$(steal_ticks)
  wrk_run "add-$backend-$n" "$GW_URL" -s "$dir/add.lua"
  figure add_per_s "$backend" "$n" "$(fmt0 "$(rps "add-$backend-$n")")"
  figure add_steal_pct "$backend" "$n" "$(steal_pct "$before")"

  timed order_list_unknown_ms "$backend" "$n" 3 "$PANELGATE" --config "$cfg" order list --state unknown
  timed client_list_ms "$backend" "$n" 3 "$PANELGATE" --config "$cfg" client list
  local admin="http://127.0.0.1:$admin_port/admin/api/v1"
  timed admin_orders_ms "$backend" "$n" 5 admin_get "$admin/orders?limit=50"
  timed admin_customers_ms "$backend" "$n" 5 admin_get "$admin/customers?limit=50"
  figure rss_mib "$backend" "$n" "$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$gw_pid/status")"
  stop "$gw_pid"
}

# ---- curve sync ----

sync_point() {
  local backend=$1 n=$2 first=$3 variant=$4 bin=$5
  local db cfg
  database "$backend" "sync_$n"
  cfg="$dir/sync-$backend-$n.yaml"
  # Once, at start, then not for an hour: the pass measured is the first. Stuck marking is
  # off: the orders are new, and it is not what is measured.
  curve_config "$cfg" "$db" "sync: { interval: 1h, stuck_after: 0s }" "    rate_limit: $RATE"
  # The database is made by the binary measured: another may know other migrations.
  local ours=$PANELGATE
  PANELGATE=$bin
  start_gateway "sync-$backend-$n" "$cfg"
  stop "$gw_pid"
  PANELGATE=$ours
  "$LOADKIT" seed --db "$db" --client bench --orders "$n" --upstream sim --service "$SERVICE" \
    --upstream-service "$UP_SERVICE" --open --first-upstream-order "$first" >/dev/null || die "seeding failed"
  say "sync, $backend, $n open orders, $variant: one pass at $RATE requests/s"
  "$LOADKIT" pass --sim "$SIM_BASE" --key "$SIM_KEY" --db "$db" --orders "$n" --rate "$RATE" \
    --log "$dir/pass-$backend-$n-$variant.log" -- "${ON_SERVER[@]}" "$bin" --config "$cfg" serve \
    >"$dir/pass-$backend-$n-$variant.json" || die "the pass run failed"
  local j="$dir/pass-$backend-$n-$variant.json"
  figure pass_s "$backend $variant" "$n" "$(jq .pass_s "$j")"
  figure pass_over_bound "$backend $variant" "$n" "$(jq .pass_over_bound "$j")"
  figure orders_per_s "$backend $variant" "$n" "$(jq .orders_per_s "$j")"
  figure cpu_us_per_order "$backend $variant" "$n" "$(jq .cpu_us_per_order "$j")"
}

# ---- curve instances ----

# cpu_ticks: clock ticks (user + system) spent so far by each kind of process, as
# "postgres gateways wrk simulator"; the gateways are $inst_pids, the simulator $SIM_PID.
cpu_ticks() {
  local pg=0 gw=0 wk=0 sim=0 f pid comm t g
  for f in /proc/[0-9]*/stat; do
    pid=${f#/proc/}
    pid=${pid%/stat}
    read -r comm t < <(awk '{ c = $2; sub(/^.*\) /, ""); print c, $12 + $13 }' "$f" 2>/dev/null) || continue
    case "$comm" in
      "(postgres)") pg=$((pg + t)) ;;
      "(wrk)") wk=$((wk + t)) ;;
    esac
    [ "$pid" = "$SIM_PID" ] && sim=$((sim + t))
    for g in "${inst_pids[@]}"; do [ "$pid" = "$g" ] && gw=$((gw + t)); done
  done
  echo "$pg $gw $wk $sim"
}

# instances_run WHAT N SCRIPT: wrk on each of the N instances at once (CONNECTIONS split among
# them, each wrk unpinned), their requests/s summed as the figure WHAT_per_s; the CPU shares
# over the middle of the run (second 1 to DURATION-1) as the cpu_WHAT_* figures.
instances_run() {
  local what=$1 n=$2 script=$3 i p
  local per=$((CONNECTIONS / n))
  local wrk_pids=()
  for i in $(seq 1 "$n"); do
    wrk -t1 -c"$per" -d"${DURATION}s" -s "$script" "${inst_urls[$i]}" >"$dir/wrk-$what-$n-$i.txt" 2>&1 &
    wrk_pids+=($!)
  done
  # The window leaves out wrk's first second and its last two, so that every wrk is still
  # there to be read at its end (QUICK's short runs: all but the edges).
  local lead=1 win=$((DURATION - 3)) a b t0 t1
  [ "$DURATION" -ge 5 ] || lead=0.2 win=1
  sleep "$lead"
  a=$(cpu_ticks)
  t0=$(date +%s%N)
  sleep "$win"
  b=$(cpu_ticks)
  t1=$(date +%s%N)
  for p in "${wrk_pids[@]}"; do wait "$p" || die "wrk failed ($what, $n instances)"; done
  local total=0
  for i in $(seq 1 "$n"); do
    total=$(awk -v t="$total" -v r="$(rps "$what-$n-$i")" 'BEGIN { print t + r }')
    if grep -q 'Non-2xx or 3xx' "$dir/wrk-$what-$n-$i.txt"; then
      notes+=("$what, $n instances, instance $i: $(grep 'Non-2xx' "$dir/wrk-$what-$n-$i.txt" | sed 's/^ *//')")
    fi
  done
  figure "${what}_per_s" panelgate "$n" "$(fmt0 "$total")"
  # Percent of the whole machine (all its cores) over the window.
  local hz ncpu x y k names=(postgres gateways wrk simulator)
  hz=$(getconf CLK_TCK)
  ncpu=$(nproc)
  read -r -a x <<<"$a"
  read -r -a y <<<"$b"
  for k in 0 1 2 3; do
    figure "cpu_${what}_${names[$k]}_pct" panelgate "$n" "$(awk -v d=$((y[k] - x[k])) -v hz="$hz" -v c="$ncpu" \
      -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", 100 * d / hz / (ns / 1e9) / c }')"
  done
}

instances_point() {
  local n=$1 i db cfg first last
  database postgres "instances_$n"
  inst_pids=()
  inst_urls=()
  for i in $(seq 1 "$n"); do
    cfg="$dir/instances-$n-$i.yaml"
    # Two instances on one host must not share a journal file.
    curve_config "$cfg" "$db" "sync: { interval: 10m }
journal: \"$dir/journal-$n-$i.jsonl\"
$RUNTIME_YAML"
    if [ "$i" = 1 ]; then
      # The first start makes the schema and the client; the seed goes in before the rest.
      start_gateway "instances-$n-1" "$cfg"
      stop "$gw_pid"
      "$LOADKIT" seed --db "$db" --client bench --orders "$SEED" --upstream sim --service "$SERVICE" \
        --upstream-service "$UP_SERVICE" >"$dir/seed-instances-$n.json" || die "seeding failed"
    fi
    local on=()
    [ "$(nproc)" -ge "$n" ] && on=(taskset -c $((i - 1)))
    start "instances-$n-$i" "${on[@]}" "$PANELGATE" --config "$cfg" serve
    inst_pids[i]=$started
    inst_urls[i]=$(listening_on "instances-$n-$i" "$started")
    wait_ready "${inst_urls[$i]%/api/v2}" "$started"
  done
  first=$(jq -r '.orders_in_db - .seeded + 1' "$dir/seed-instances-$n.json")
  last=$(jq -r '.orders_in_db' "$dir/seed-instances-$n.json")
  cat >"$dir/status-random.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
request = function()
  return wrk.format(nil, nil, nil, "key=$KEY&action=status&order=" .. math.random($first, $last))
end
EOF
  # The API answers errors with HTTP 200, which wrk counts as answers: every instance must
  # answer a status of the seeded orders with a status before its req/s mean anything.
  for i in $(seq 1 "$n"); do
    post "${inst_urls[$i]}" -d "key=$KEY&action=status&order=$last" | jq -e 'has("status")' >/dev/null ||
      die "instance $i of $n does not answer the status of order $last"
  done
  say "instances: $n, status"
  instances_run status "$n" "$dir/status-random.lua"
  say "instances: $n, add"
  instances_run add "$n" "$dir/add.lua"
  for i in $(seq 1 "$n"); do stop "${inst_pids[$i]}"; done
}

# ---- curve catalog ----

# services_of URL FILE [HEADER]: the gateway's services reply into FILE (with its headers in
# FILE.headers).
services_of() {
  post "$1" -d "key=$KEY&action=services" -D "$2.headers" -o "$2" ${3:+-H "$3"}
}

catalog_point() {
  local n=$1 db cfg sim_pid
  start "simulator-$n" "${ON_CLIENT[@]}" "$PANELGATE" --config "$dir/no-simulator.yaml" simulate \
    --listen 127.0.0.1:0 --key "$SIM_KEY" --services "$n" --speed 1 --balance 1000000000000
  sim_pid=$started
  SIM_URL=$(listening_on "simulator-$n" "$sim_pid")
  database sqlite "catalog_$n"
  cfg="$dir/catalog-$n.yaml"
  curve_config "$cfg" "$db" "sync: { interval: 10m }"
  say "catalog, $n services: building"
  start_gateway "gateway-catalog-$n" "$cfg"
  local www="$dir/www"
  mkdir -p "$www"
  services_of "$GW_URL" "$www/services.json"
  services_of "$GW_URL" "$dir/services-again.json"
  cmp -s "$www/services.json" "$dir/services-again.json" || die "two services replies differ ($n)"
  services_of "$GW_URL" "$www/services.json.gz" "Accept-Encoding: gzip"
  grep -qi '^content-encoding: *gzip' "$www/services.json.gz.headers" || die "the gateway does not gzip ($n)"
  gzip -dc "$www/services.json.gz" | cmp -s - "$www/services.json" || die "the gzip reply is not the JSON ($n)"
  rm -f "$www"/*.headers
  chmod 644 "$www"/*
  local listed
  listed=$(jq length "$www/services.json")
  figure services_listed panelgate "$n" "$listed"
  figure bytes_plain panelgate "$n" "$(stat -c %s "$www/services.json")"
  figure bytes_gzip panelgate "$n" "$(stat -c %s "$www/services.json.gz")"
  local build
  build=$(curl -sf --max-time 5 "$GW_BASE/metrics" | awk '$1 == "panelgate_catalog_build_seconds" { print $2 }')
  [ -n "$build" ] || die "no panelgate_catalog_build_seconds in /metrics"
  figure build_ms panelgate "$n" "$(awk -v s="$build" 'BEGIN { printf "%.2f", s * 1000 }')"
  figure rss_after_build_mib panelgate "$n" "$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$gw_pid/status")"

  local port
  port=$(free_port)
  nginx_conf "$dir/nginx.conf" "$port"
  start_nginx "$port"
  local url="http://127.0.0.1:$port/services.json"
  post "$url" -o "$dir/nginx-plain" && cmp -s "$dir/nginx-plain" "$www/services.json" ||
    die "nginx does not serve the same JSON bytes ($n)"
  curl -sS --max-time 30 -H 'Accept-Encoding: gzip' -o "$dir/nginx-gzip" "$url" &&
    cmp -s "$dir/nginx-gzip" "$www/services.json.gz" || die "nginx does not serve the same gzip bytes ($n)"
  post_script "$dir/services.lua" "key=$KEY&action=services"
  post_script "$dir/services-gzip.lua" "key=$KEY&action=services" "Accept-Encoding: gzip"
  say "catalog, $n services: services replies, panelgate and nginx taking turns"
  wrk_run "nginx-plain-$n" "$url"
  wrk_run "panelgate-plain-$n" "$GW_URL" -s "$dir/services.lua"
  wrk_run "nginx-gzip-$n" "$url" -H 'Accept-Encoding: gzip'
  wrk_run "panelgate-gzip-$n" "$GW_URL" -s "$dir/services-gzip.lua"
  stop "$nginx_pid"
  local v
  for v in plain gzip; do
    figure "${v}_req_s" nginx "$n" "$(fmt0 "$(rps "nginx-$v-$n")")"
    figure "${v}_req_s" panelgate "$n" "$(fmt0 "$(rps "panelgate-$v-$n")")"
    figure ratio "$v" "$n" "$(ratio "$(rps "panelgate-$v-$n")" "$(rps "nginx-$v-$n")")"
  done
  figure rss_peak_mib panelgate "$n" "$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$gw_pid/status")"
  stop "$gw_pid"
  stop "$sim_pid"
}

# ---- curve customers ----

# key_latency NAME COUNT CONNECTIONS [latency args...]: COUNT `services` requests (gzip) at
# LAT_RATE; the reply's JSON in $dir/NAME.json; an error is a note.
key_latency() {
  local name=$1 count=$2 conns=$3
  shift 3
  local seconds
  seconds=$(awk -v c="$count" -v r="$LAT_RATE" 'BEGIN { printf "%.3f", c / r }')
  "${ON_CLIENT[@]}" "$LOADKIT" latency --url "$GW_URL" --header "Accept-Encoding: gzip" \
    --rate "$LAT_RATE" --seconds "$seconds" --connections "$conns" "$@" >"$dir/$name.json" ||
    die "the $name run failed"
  local errors
  errors=$(jq .errors "$dir/$name.json")
  [ "$errors" = 0 ] || notes+=("$name: $errors errors")
}

customers_point() {
  local backend=$1 n=$2 db cfg
  database "$backend" "customers_$n"
  cfg="$dir/customers-$backend-$n.yaml"
  curve_config "$cfg" "$db" "sync: { interval: 10m }"
  start_gateway "customers-$backend-$n" "$cfg"
  stop "$gw_pid"
  say "customers, $backend, $n customers: seeding"
  "$LOADKIT" seed-customers --db "$db" --prefix curve-customer- --count "$n" >/dev/null ||
    die "seeding customers failed"
  start_gateway "customers-$backend-$n" "$cfg"
  figure rss_start_mib "$backend" "$n" "$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$gw_pid/status")"
  local total=$((LAT_RATE * LAT_SECONDS)) cold conns=8
  # Each key once, the connections' warm-ups taking the first ones. A single connection
  # would have no slack at LAT_RATE: a lookup over 1 ms (PostgreSQL on a busy machine) queues
  # every later request behind it, and the figure would be the queue, not the lookup. A
  # handful of keys cannot feed eight warm-ups: one connection there.
  [ "$n" -ge 1000 ] || conns=1
  cold=$((n - conns < total ? n - conns : total))
  key_latency "cold-$backend-$n" "$cold" "$conns" --body "key=curve-customer-{id}&action=services" \
    --ids "1:$n" --in-order
  key_latency "hot-$backend-$n" "$total" 8 --body "key=curve-customer-1&action=services"
  key_latency "spread-$backend-$n" "$total" 8 --body "key=curve-customer-{id}&action=services" \
    --ids "1:$n"
  local run
  for run in cold hot spread; do
    figure "${run}_p50_us" "$backend" "$n" "$(jq .p50_us "$dir/$run-$backend-$n.json")"
    figure "${run}_p99_us" "$backend" "$n" "$(jq .p99_us "$dir/$run-$backend-$n.json")"
  done
  figure cold_requests "$backend" "$n" "$cold"
  figure rss_end_mib "$backend" "$n" "$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$gw_pid/status")"
  figure rss_peak_mib "$backend" "$n" "$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$gw_pid/status")"
  stop "$gw_pid"
}

# ---- curve soak ----

soak_run() {
  local backend=$1 requests=$2 db cfg
  database "$backend" soak
  cfg="$dir/soak-$backend.yaml"
  curve_config "$cfg" "$db"
  start_gateway "soak-$backend" "$cfg"
  post "$GW_URL" -d "key=$KEY&action=services" -o "$dir/soak-services.json"
  local rate_units
  rate_units=$(jq -r --argjson s "$SERVICE" '.[] | select(.service == $s) | .rate' "$dir/soak-services.json" |
    awk '{ printf "%.0f", $1 * 100000 }')
  stop "$gw_pid"
  say "soak, $backend: seeding $SOAK_ORDERS finished orders"
  "$LOADKIT" seed --db "$db" --client bench --orders "$SOAK_ORDERS" --upstream sim --service "$SERVICE" \
    --upstream-service "$UP_SERVICE" --rate-units "$rate_units" >"$dir/soak-seed.json" || die "seeding failed"
  local first last
  first=$(jq -r '.orders_in_db - .seeded + 1' "$dir/soak-seed.json")
  last=$(jq -r '.orders_in_db' "$dir/soak-seed.json")
  start_gateway "soak-$backend" "$cfg"
  say "soak, $backend: $requests requests at $RATE/s"
  local j="$dir/soak-$backend.json" w="$OUT/soak-$backend-windows.tsv"
  "${ON_CLIENT[@]}" "$LOADKIT" soak --url "$GW_URL" --key "$KEY" --ids "$first:$last" \
    --service "$SERVICE" --quantity "$QTY" --requests "$requests" --rate "$RATE" --batches-per-10k 500 \
    --window-s "$WINDOW" --pid "$gw_pid" --windows "$w" >"$j" || die "the soak run failed"
  "$LOADKIT" check --db "$db" >/dev/null || die "the ledger check failed after the soak"
  stop "$gw_pid"
  # The plots: one point per window, over time.
  tail -n +2 "$w" | while IFS=$'\t' read -r t _ errors p50 p99 rss; do
    figure p99_us "$backend" "$t" "$p99"
    figure p50_us "$backend" "$t" "$p50"
    figure rss_mib "$backend" "$t" "$rss"
    figure errors "$backend" "$t" "$errors"
  done
  soak_rows+=("| $backend | $(jq .scheduled "$j") | $RATE | $(jq .errors "$j") | $(jq .p50_us "$j") | $(jq .p99_us "$j") | $(jq .worst_window_p99_us "$j") (at $(jq .worst_window_s "$j") s) | $(jq .rss_start_mib "$j") | $(jq .rss_end_mib "$j") | $(jq .rss_max_mib "$j") |")
  [ "$(jq .errors "$j")" = 0 ] || notes+=("soak $backend: errors $(jq -c .by_kind "$j")")
}

case "$curve" in
  ledger)
    cat >"$dir/add.lua" <<EOF
wrk.method = "POST"
wrk.body = "key=$KEY&action=add&service=$SERVICE&link=https://example.com/p&quantity=$QTY"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
EOF
    for backend in $BACKENDS; do
      sizes="SIZES_${backend^^}"
      for n in ${!sizes:-$SIZES}; do ledger_point "$backend" "$n"; done
    done
    ;;
  instances)
    cat >"$dir/add.lua" <<EOF
wrk.method = "POST"
wrk.body = "key=$KEY&action=add&service=$SERVICE&link=https://example.com/p&quantity=$QTY"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
EOF
    for n in $SIZES; do instances_point "$n"; done
    # The scaling factors: each size against the first (one instance), same command, same run.
    one=$(echo "$SIZES" | awk '{ print $1 }')
    for what in add status; do
      base=$(awk -F'\t' -v m="${what}_per_s" -v n="$one" '$1 == m && $3 == n { print $4 }' "$data")
      for n in $SIZES; do
        v=$(awk -F'\t' -v m="${what}_per_s" -v n="$n" '$1 == m && $3 == n { print $4 }' "$data")
        figure "${what}_scaling" panelgate "$n" "$(ratio "$v" "$base")"
        figure "${what}_scaling" ideal "$n" "$(awk -v n="$n" -v o="$one" 'BEGIN { printf "%.2f", n / o }')"
      done
    done
    ;;
  sync)
    variants=("after:$PANELGATE")
    [ -n "${BEFORE_BIN:-}" ] && variants+=("before:$BEFORE_BIN")
    for n in $SIZES; do
      figure pass_s bound "$n" "$(awk -v n="$n" -v r="$RATE" 'BEGIN { printf "%.3f", int((n + 99) / 100) / r }')"
      figure orders_per_s bound "$n" "$(awk -v r="$RATE" 'BEGIN { print r * 100 }')"
      say "sync: $n orders in progress at the simulator"
      "$LOADKIT" sim-orders --url "$SIM_URL" --key "$SIM_KEY" --service "$UP_SERVICE" --quantity "$QTY" \
        --count "$n" >"$dir/sim-orders-$n.json" || die "placing orders at the simulator failed"
      first=$(jq .first "$dir/sim-orders-$n.json")
      for backend in $BACKENDS; do
        for v in "${variants[@]}"; do sync_point "$backend" "$n" "$first" "${v%%:*}" "${v#*:}"; done
      done
    done
    ;;
  catalog)
    for n in $SIZES; do catalog_point "$n"; done
    ;;
  customers)
    for backend in $BACKENDS; do
      for n in $SIZES; do customers_point "$backend" "$n"; done
    done
    ;;
  soak)
    soak_rows=()
    for backend in $BACKENDS; do soak_run "$backend" "$SIZES"; done
    ;;
esac

# ---- the table and the plots ----

# The table: one row per series and size, one column per figure, in the order measured (the
# soak: one row per backend, its windows being in the plots and in soak-*-windows.tsv).
metrics=$(cut -f1 "$data" | awk '!seen[$0]++')
x_label="size ($(case "$curve" in catalog) echo services ;; customers) echo customers ;; *) echo orders ;; esac))"
linear=()
if [ "$curve" = soak ]; then
  x_label="time (s), ${WINDOW} s windows"
  linear=(--linear-x)
  {
    echo "| backend | requests | rate/s | errors | p50_us | p99_us | worst window p99_us | rss_start_mib | rss_end_mib | rss_max_mib |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for r in "${soak_rows[@]}"; do echo "$r"; done
  } >"$OUT/$curve.md"
else {
  echo "| series | size | $(echo "$metrics" | paste -sd'|' | sed 's/|/ | /g') |"
  echo "|---|---|$(echo "$metrics" | sed 's/.*/---/' | paste -sd'|')|"
  cut -f2,3 "$data" | awk '!seen[$0]++' | while IFS=$'\t' read -r series size; do
    line="| $series | $size |"
    for m in $metrics; do
      v=$(awk -F'\t' -v m="$m" -v s="$series" -v n="$size" '$1 == m && $2 == s && $3 == n { print $4 }' "$data")
      line+=" ${v:--} |"
    done
    echo "$line"
  done
} >"$OUT/$curve.md"
fi
[ "$curve" = instances ] && x_label="instances (gateways, one core each)"
for m in $metrics; do
  "$LOADKIT" plot --data "$data" --metric "$m" --title "$curve: $m" --x-label "$x_label" \
    --y-label "$m" --out "$OUT/$curve-$m.png" "${linear[@]}" || die "plotting $m failed"
done
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores ($pinning); $profile build"
  echo
  cat "$OUT/$curve.md"
  for n in "${notes[@]}"; do echo "note: $n"; done
} | tee "$OUT/$curve.txt"
