#!/usr/bin/env bash
# Load benchmark: panelgate against baselines run on the same machine in the same run.
#
#   bash benches/load.sh
#
# Builds release, starts the simulated upstream, the gateway, nginx and the baselines on
# loopback, drives them with wrk (closed loop, throughput) and `loadkit latency` (open loop,
# fixed rate), and prints one table: path, baseline, panelgate, ratio, target, PASS/FAIL.
# A missed target is a FAIL row, not a failure of the script; the script fails (non-zero)
# only when something is broken: a server that does not start, a reply that is wrong.
#
# Knobs (environment): DURATION (seconds per wrk run, 8), CONNECTIONS (wrk, 32), WARMUP
# (seconds of unmeasured wrk before each, 2), LAT_RATE (requests/s, 1000), LAT_SECONDS (10),
# LAT_CONNECTIONS (8), SEED_ORDERS (100000), ROUNDS (1: each row's baseline and panelgate runs
# alternate this many times and the table shows medians; 3 on a noisy machine, about 5 minutes),
# KEEP=1 (keep the work dir), RESULTS=FILE (also write the table there as markdown),
# RUNTIMES (the gateway's runtime models measured side by side, each its own gateway on a copy
# of the same ledger, against the same baselines: "multi_thread thread_per_core"),
# RUNTIME_THREADS (their `runtime.threads`; unset: the cores the gateway may run on, one when
# pinned), CARGO_TARGET_DIR, SKIP_BUILD=1 (use the binaries already built).
#
#   bash benches/load.sh curve ledger|sync|instances|catalog|customers|soak
#
# One scale curve instead (benches/curves.sh says what each measures, and its knobs: SIZES,
# BACKENDS, REQUESTS, QUICK=1 for tiny sizes on a dev build, as CI runs them).
set -euo pipefail

mode="${1:-rows}"
curve="${2:-}"
case "$mode:$curve" in
  rows:) ;;
  curve:ledger | curve:sync | curve:instances | curve:catalog | curve:customers | curve:soak) ;;
  *)
    echo "usage: bash benches/load.sh [curve ledger|sync|instances|catalog|customers|soak]" >&2
    exit 2
    ;;
esac

DURATION="${DURATION:-8}"
CONNECTIONS="${CONNECTIONS:-32}"
WARMUP="${WARMUP:-2}"
LAT_RATE="${LAT_RATE:-1000}"
LAT_SECONDS="${LAT_SECONDS:-10}"
LAT_CONNECTIONS="${LAT_CONNECTIONS:-8}"
SEED_ORDERS="${SEED_ORDERS:-100000}"
ROUNDS="${ROUNDS:-1}"
RUNTIMES="${RUNTIMES:-multi_thread thread_per_core}"
read -r -a models <<<"$RUNTIMES"
[ "${#models[@]}" -gt 0 ] || { echo "load.sh: RUNTIMES is empty" >&2; exit 2; }

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

say() { printf '== %s\n' "$*" >&2; }
die() {
  printf 'load.sh: %s\n' "$*" >&2
  exit 1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---- tools ----

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ "$mode" = curve ]; then
  # The plots' text is drawn from this font file (no fontconfig needed).
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  if [ "$curve" = catalog ]; then
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  fi
else
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
fi
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

# QUICK=1 (curves only): the dev profile, so that CI reuses what its tests built.
if [ "$mode" = curve ] && [ "${QUICK:-0}" = 1 ]; then
  profile=dev profile_dir=debug
else
  profile=release profile_dir=release
fi
# SKIP_BUILD=1 measures the binaries already built (a rebuild of the release loadkit takes
# minutes on the shared machine, and a run right after an edit of a comment need not wait).
if [ "${SKIP_BUILD:-0}" = 1 ]; then
  say "not building: using the $profile binaries there are"
else
  say "building $profile (panelgate, loadkit)"
  cargo build --profile "$profile" --locked --bin panelgate --example loadkit >&2
fi
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
PANELGATE="$target_dir/$profile_dir/panelgate"
LOADKIT="$target_dir/$profile_dir/examples/loadkit"
[ -x "$PANELGATE" ] && [ -x "$LOADKIT" ] || die "built binaries not found under $target_dir/$profile_dir"

started_at=$(date +%s)

# ---- work dir and cleanup ----

dir="$(mktemp -d "${TMPDIR:-/tmp}/panelgate-load.XXXXXX")"
# nginx's workers run as an unprivileged user when started as root: they must read the dir.
chmod 755 "$dir"
pids=()
cleanup() {
  local status=$?
  set +e
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  if [ "${KEEP:-0}" = 1 ]; then
    echo "work dir kept: $dir" >&2
  else
    rm -rf "$dir"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- cores ----

cores=$(nproc)
# Command prefixes rather than functions, so that a background start's $! is the process
# itself (taskset execs it), which the cleanup can then signal.
if [ "$cores" -ge 2 ]; then
  ON_SERVER=(taskset -c 0)
  ON_CLIENT=(taskset -c 1)
  pinning="servers under test on core 0; load generators and the simulator on core 1 (the forwarded row's simulator on core 0)"
else
  ON_SERVER=()
  ON_CLIENT=()
  pinning="unpinned: only $cores core"
fi

# ---- process helpers ----

# start NAME CMD...: runs CMD in the background with its output in $dir/NAME.{out,err} and
# remembers its pid for the cleanup; the pid is left in $started.
start() {
  local name=$1
  shift
  "$@" >"$dir/$name.out" 2>"$dir/$name.err" &
  started=$!
  pids+=("$started")
}

# listening_on NAME PID: waits (30 s at most: a start can be slow on a busy shared machine)
# for the first stdout line `listening on X`, and prints X.
listening_on() {
  local name=$1 pid=$2 line=""
  for _ in $(seq 1 300); do
    line=$(head -n 1 "$dir/$name.out" 2>/dev/null || true)
    case "$line" in "listening on "*) break ;; esac
    kill -0 "$pid" 2>/dev/null || { cat "$dir/$name.err" >&2; die "$name exited at start"; }
    sleep 0.1
  done
  case "$line" in "listening on "*) ;; *) die "$name did not say where it listens within 30 s" ;; esac
  echo "${line#listening on }"
}

# wait_ready BASE PID: polls BASE/readyz (30 s at most) until it answers 200.
wait_ready() {
  local base=$1 pid=$2
  for _ in $(seq 1 300); do
    if curl -sf -o /dev/null --max-time 1 "$base/readyz"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$dir/gateway.err" >&2; die "the gateway at $base exited"; }
    sleep 0.1
  done
  curl -s --max-time 1 "$base/readyz" >&2 || true
  die "the gateway at $base was not ready within 30 s"
}

# stop PID: SIGTERM and wait (15 s at most) for it to be gone.
stop() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    # Braces around wait: bash's own "Terminated" job report goes to the null device too.
    kill -0 "$pid" 2>/dev/null || { { wait "$pid" || true; } 2>/dev/null; return 0; }
    sleep 0.1
  done
  die "process $pid did not stop within 15 s"
}

start_gateway() {
  local name=$1 config=$2
  # --config before the subcommand: a command line without "panelgate serve" in it is not
  # caught by a `pkill -f "panelgate serve"` someone else runs on a shared machine.
  start "$name" "${ON_SERVER[@]}" "$PANELGATE" --config "$config" serve
  gw_pid=$started
  GW_URL=$(listening_on "$name" "$gw_pid")
  GW_BASE=${GW_URL%/api/v2}
  wait_ready "$GW_BASE" "$gw_pid"
}

# A free loopback port for nginx and the admin API (the servers here that cannot pick their own).
free_port() {
  local port low
  # Below the kernel's range of ephemeral ports: a client connection (this run's own wrk, curl
  # and database connections among them) can hold any port in that range as its local end,
  # and nothing here would see it before the server's bind failed.
  low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 12000 ] || low=32768
  for _ in $(seq 1 50); do
    port=$((10000 + RANDOM % (low - 10000)))
    # Nothing accepts a connection there (bash's /dev/tcp, so no other tool is needed).
    if ! (: >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free port found"
}

# ---- measuring helpers ----

# wrk_run NAME URL [wrk args...]: a warm-up, then the measured run; output in $dir/wrk-NAME.txt.
wrk_run() {
  local name=$1 url=$2
  shift 2
  if [ "$WARMUP" -gt 0 ]; then
    "${ON_CLIENT[@]}" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" >/dev/null 2>&1 || true
  fi
  "${ON_CLIENT[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" >"$dir/wrk-$name.txt" 2>&1 ||
    { cat "$dir/wrk-$name.txt" >&2; die "wrk failed ($name)"; }
  if grep -q 'Non-2xx or 3xx responses' "$dir/wrk-$name.txt"; then
    notes+=("$name: $(grep 'Non-2xx' "$dir/wrk-$name.txt" | sed 's/^ *//')")
  fi
  if grep -q 'Socket errors' "$dir/wrk-$name.txt"; then
    notes+=("$name: $(grep 'Socket errors' "$dir/wrk-$name.txt" | sed 's/^ *//')")
  fi
}

rps() { awk '/^Requests\/sec:/ {print $2}' "$dir/wrk-$1.txt"; }

# wrk's p99 in microseconds.
p99_us() {
  awk '$1 == "99%" {
    v = $2; n = v + 0
    if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000
  }' "$dir/wrk-$1.txt"
}

# A wrk script POSTing a form body.
post_script() {
  local file=$1 body=$2
  shift 2
  {
    echo 'wrk.method = "POST"'
    printf 'wrk.body = "%s"\n' "$body"
    echo 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"'
    for h in "$@"; do printf 'wrk.headers["%s"] = "%s"\n' "${h%%: *}" "${h#*: }"; done
  } >"$file"
}

# median_of FN NAME: the median over the rounds of `FN NAME-r` (r = 1..ROUNDS).
median_of() {
  local fn=$1
  shift
  local name=${*: -1} args=("${@:1:$#-1}")
  for r in $(seq 1 "$ROUNDS"); do "$fn" "${args[@]}" "$name-$r"; done |
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
json_field() { jq -r ".$1" "$dir/$2.json"; }
plain() { cat "$dir/$1.txt"; }
signed() { if [ "$1" -ge 0 ]; then echo "+$1"; else echo "$1"; fi; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
verdict() { if "$@"; then echo PASS; else echo FAIL; fi; }
fmt0() { awk -v a="$1" 'BEGIN { printf "%.0f", a }'; }

post() { curl -sS --max-time 30 "$@"; }

# nginx_conf FILE PORT: Debian's defaults, one worker, no access log, keep-alive without a
# request cap, serving $dir/www (services.json with its .gz beside it, and status.json).
nginx_conf() {
  local file=$1 port=$2
  mkdir -p "$dir/www" "$dir/nginx-temp"
  chmod 755 "$dir/www"
  cat >"$file" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 1024; }
http {
  sendfile on;
  tcp_nopush on;
  types_hash_max_size 2048;
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $dir/nginx-temp/body;
  proxy_temp_path $dir/nginx-temp/proxy;
  fastcgi_temp_path $dir/nginx-temp/fastcgi;
  uwsgi_temp_path $dir/nginx-temp/uwsgi;
  scgi_temp_path $dir/nginx-temp/scgi;
  server {
    listen 127.0.0.1:$port;
    root $dir/www;
    location = /services.json { gzip_static on; }
    # The status row POSTs its request here: a static file answers a POST with 405, which
    # this turns into the file itself.
    location = /status.json { error_page 405 =200 \$uri; }
  }
}
EOF
}

# start_nginx PORT: nginx on $dir/nginx.conf, answering on PORT; its pid in $nginx_pid.
start_nginx() {
  local port=$1
  start nginx "${ON_SERVER[@]}" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
  nginx_pid=$started
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$port/services.json" && return 0
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$dir/nginx.err" "$dir/nginx-error.log" >&2 2>/dev/null; die "nginx exited at start"; }
    sleep 0.1
  done
  die "nginx did not answer within 10 s"
}

rows=()
notes=()
row() { rows+=("$1|$2|$3|$4|$5|$6"); }
# The runtime model a row measured, when more than one is.
tag() { if [ "${#models[@]}" -gt 1 ]; then echo " [$1]"; fi; }

if [ "$mode" = curve ]; then
  # shellcheck source=benches/curves.sh
  source "$repo/benches/curves.sh"
  exit 0
fi

# ---- the simulated upstream ----

SIM_KEY=sim-key
say "starting the simulator (3000 services)"
# A config path that does not exist: the simulator runs from its flags alone.
start simulator "${ON_CLIENT[@]}" "$PANELGATE" --config "$dir/no-simulator.yaml" simulate \
  --listen 127.0.0.1:0 --key "$SIM_KEY" --services 3000 --speed 1 --balance 1000000000000
sim_pid=$started
SIM_URL=$(listening_on simulator "$sim_pid")
SIM_BASE=${SIM_URL%/api/v2}
post "$SIM_URL" -d "key=$SIM_KEY&action=balance" | grep -q '"balance"' || die "the simulator does not answer"

# ---- the gateway ----

KEY=load-bench-customer-key-0000000001
OFFSET=1000
write_config() {
  local file=$1 db=$2 max_age=$3 model=$4
  cat >"$file" <<EOF
listen: "127.0.0.1:0"
database: "sqlite://$db"
log_level: warn
status_max_age: $max_age
config_poll: 0s
upstreams:
  - name: sim
    url: "$SIM_URL"
    key: "$SIM_KEY"
    max_concurrency: 256
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
# The rows measure request paths; background sync stays out of them.
sync:
  interval: 10m
runtime:
  model: $model
${RUNTIME_THREADS:+  threads: $RUNTIME_THREADS}
EOF
}
write_config "$dir/config.yaml" "$dir/panelgate.db" 1h "${models[0]}"


say "starting the gateway (creates the database and the client)"
start_gateway gateway "$dir/config.yaml"
post "$GW_URL" -d "key=$KEY&action=services" -o "$dir/services.json"
jq -e 'type == "array" and length > 1000' "$dir/services.json" >/dev/null ||
  die "the services reply is not the catalog: $(head -c 200 "$dir/services.json")"
# A simple service for the add and status rows: Default type, quantity its minimum.
read -r SERVICE QTY < <(jq -r '[.[] | select(.type == "Default")][0] | "\(.service) \(.min)"' "$dir/services.json")
[ -n "$SERVICE" ] && [ "$SERVICE" != null ] || die "no Default service in the catalog"
UP_SERVICE=$((SERVICE - OFFSET))
RATE_UNITS=$(jq -r --argjson s "$SERVICE" '.[] | select(.service == $s) | .rate' "$dir/services.json" |
  awk '{ printf "%.0f", $1 * 100000 }')

say "seeding $SEED_ORDERS finished orders into the ledger"
stop "$gw_pid"
"$LOADKIT" seed --db "$dir/panelgate.db" --client bench --orders "$SEED_ORDERS" --upstream sim \
  --service "$SERVICE" --upstream-service "$UP_SERVICE" --rate-units "$RATE_UNITS" >"$dir/seed.json" ||
  die "seeding failed"
# One gateway per runtime model, each on its own copy of the seeded ledger.
declare -A main_pids main_urls
for m in "${models[@]}"; do
  for suffix in "" -wal -shm; do
    [ -f "$dir/panelgate.db$suffix" ] && cp "$dir/panelgate.db$suffix" "$dir/panelgate-$m.db$suffix"
  done
  write_config "$dir/config-$m.yaml" "$dir/panelgate-$m.db" 1h "$m"
  start_gateway "gateway-$m" "$dir/config-$m.yaml"
  main_pids[$m]=$gw_pid
  main_urls[$m]=$GW_URL
done
MAIN_URL=${main_urls[${models[0]}]}

# ---- row 1: services, plain ----

say "row 1: services (keep-alive)"
mkdir -p "$dir/www" "$dir/nginx-temp"
chmod 755 "$dir/www"
post "$MAIN_URL" -d "key=$KEY&action=services" -o "$dir/www/services.json"
cmp -s "$dir/services.json" "$dir/www/services.json" || die "two services replies differ"
plain_bytes=$(stat -c %s "$dir/www/services.json")

# Gzip: panelgate's own bytes if it compresses, else gzip -9 of the JSON (and the row says so).
gz_note=""
curl -sS --max-time 30 -D "$dir/gzip-headers.txt" -o "$dir/gzip-reply" -H 'Accept-Encoding: gzip' \
  "$MAIN_URL" -d "key=$KEY&action=services"
if grep -qi '^content-encoding: *gzip' "$dir/gzip-headers.txt"; then
  gzip -dc "$dir/gzip-reply" | cmp -s - "$dir/www/services.json" ||
    die "panelgate's gzip reply does not decompress to its JSON reply"
  cp "$dir/gzip-reply" "$dir/www/services.json.gz"
else
  cmp -s "$dir/gzip-reply" "$dir/www/services.json" || die "the services reply differs with Accept-Encoding"
  gzip -9 -n -c "$dir/www/services.json" >"$dir/www/services.json.gz"
  gz_note="*"
  notes+=("* panelgate does not gzip yet: it answers the plain JSON; nginx serves gzip -9 of it")
fi
gzip_bytes=$(stat -c %s "$dir/www/services.json.gz")
chmod 644 "$dir/www/"*

NGINX_PORT=$(free_port)
nginx_conf "$dir/nginx.conf" "$NGINX_PORT"
start_nginx "$NGINX_PORT"
NGINX_URL="http://127.0.0.1:$NGINX_PORT/services.json"
curl -sS --max-time 5 -o "$dir/nginx-plain" "$NGINX_URL" || die "nginx does not answer"
cmp -s "$dir/nginx-plain" "$dir/www/services.json" || die "nginx does not serve the same JSON bytes"
curl -sS --max-time 5 -D "$dir/nginx-gzip-headers.txt" -o "$dir/nginx-gzip" -H 'Accept-Encoding: gzip' "$NGINX_URL"
grep -qi '^content-encoding: *gzip' "$dir/nginx-gzip-headers.txt" || die "nginx does not send the .gz file"
cmp -s "$dir/nginx-gzip" "$dir/www/services.json.gz" || die "nginx does not serve the same gzip bytes"

post_script "$dir/services.lua" "key=$KEY&action=services"
for r in $(seq 1 "$ROUNDS"); do
  wrk_run "nginx-services-$r" "$NGINX_URL"
  for m in "${models[@]}"; do wrk_run "panelgate-services-$m-$r" "${main_urls[$m]}" -s "$dir/services.lua"; done
done
b=$(median_of rps nginx-services)
for m in "${models[@]}"; do
  a=$(median_of rps "panelgate-services-$m")
  row "services, $(fmt0 "$plain_bytes") B, keep-alive$(tag "$m")" "nginx static: $(fmt0 "$b") req/s" \
    "$(fmt0 "$a") req/s" "$(ratio "$a" "$b")x" ">= 1.0x" "$(verdict at_least "$(ratio "$a" "$b")" 1.0)"
done

# ---- row 2: services, gzip ----

say "row 2: services with Accept-Encoding: gzip"
post_script "$dir/services-gzip.lua" "key=$KEY&action=services" "Accept-Encoding: gzip"
for r in $(seq 1 "$ROUNDS"); do
  wrk_run "nginx-services-gzip-$r" "$NGINX_URL" -H 'Accept-Encoding: gzip'
  for m in "${models[@]}"; do wrk_run "panelgate-services-gzip-$m-$r" "${main_urls[$m]}" -s "$dir/services-gzip.lua"; done
done
b=$(median_of rps nginx-services-gzip)
for m in "${models[@]}"; do
  a=$(median_of rps "panelgate-services-gzip-$m")
  row "services, gzip$gz_note$(tag "$m")" "nginx gzip_static: $(fmt0 "$b") req/s" \
    "$(fmt0 "$a") req/s" "$(ratio "$a" "$b")x" ">= 1.0x" "$(verdict at_least "$(ratio "$a" "$b")" 1.0)"
done

# ---- row 3: multi-status of 100 fresh orders ----

say "row 3: status of 100 orders, answered from the ledger"
ids=()
for i in $(seq 1 100); do
  first_id=""
  for m in "${models[@]}"; do
    reply=$(post "${main_urls[$m]}" -d "key=$KEY&action=add&service=$SERVICE&link=https://example.com/s$i&quantity=$QTY")
    id=$(jq -r '.order // empty' <<<"$reply")
    [ -n "$id" ] || die "add through the gateway ($m) failed: $reply"
    # Copies of one ledger hand out the same ids: one status body serves every gateway.
    [ -z "$first_id" ] || [ "$id" = "$first_id" ] || die "the gateways' order ids differ ($first_id, $id)"
    first_id=$id
  done
  ids+=("$id")
done
ORDERS=$(
  IFS=,
  echo "${ids[*]}"
)
STATUS_BODY="key=$KEY&action=status&orders=$ORDERS"
# The first status may still refresh from upstream; the measured ones must not need to.
for m in "${models[@]}"; do post "${main_urls[$m]}" -d "$STATUS_BODY" >/dev/null; done
sim_status_before=$(curl -sS --max-time 5 "$SIM_BASE/_sim/state?key=$SIM_KEY" | jq '.requests.status // 0')
post "$MAIN_URL" -d "$STATUS_BODY" -o "$dir/status.json"
jq -e 'length == 100 and ([.[] | select(has("error"))] | length == 0)' "$dir/status.json" >/dev/null ||
  die "the multi-status reply is wrong: $(head -c 300 "$dir/status.json")"
# The baseline does the same work on the wire: nginx serves these very reply bytes as a static
# file, to the same POST (its 405 for a POST to a file turned into the file), so the kernel's
# send of the 8-9 KB reply weighs the same on both sides.
cp "$dir/status.json" "$dir/www/status.json"
chmod 644 "$dir/www/status.json"
NGINX_STATUS_URL="http://127.0.0.1:$NGINX_PORT/status.json"
post "$NGINX_STATUS_URL" -d "$STATUS_BODY" -o "$dir/nginx-status" || die "nginx does not answer the status POST"
cmp -s "$dir/nginx-status" "$dir/status.json" || die "nginx does not serve the same status bytes"
status_bytes=$(stat -c %s "$dir/status.json")
post_script "$dir/status.lua" "$STATUS_BODY"
for m in "${models[@]}"; do
  post "${main_urls[$m]}" -d "$STATUS_BODY" -o "$dir/status-$m.json"
  [ "$(stat -c %s "$dir/status-$m.json")" = "$status_bytes" ] ||
    notes+=("status row: the $m gateway's reply is $(stat -c %s "$dir/status-$m.json") B, not $status_bytes B")
done
for r in $(seq 1 "$ROUNDS"); do
  wrk_run "nginx-status-$r" "$NGINX_STATUS_URL" -s "$dir/status.lua"
  for m in "${models[@]}"; do wrk_run "panelgate-status-$m-$r" "${main_urls[$m]}" -s "$dir/status.lua"; done
done
sim_status_after=$(curl -sS --max-time 5 "$SIM_BASE/_sim/state?key=$SIM_KEY" | jq '.requests.status // 0')
if [ "$sim_status_after" != "$sim_status_before" ]; then
  notes+=("status row: $((sim_status_after - sim_status_before)) status calls reached the upstream during it")
fi
stop "$nginx_pid"
b=$(median_of rps nginx-status)
for m in "${models[@]}"; do
  a=$(median_of rps "panelgate-status-$m")
  row "status, 100 fresh orders, $(fmt0 "$status_bytes") B$(tag "$m")" "nginx static, same bytes: $(fmt0 "$b") req/s" \
    "$(fmt0 "$a") req/s" "$(ratio "$a" "$b")x" ">= 0.8x" "$(verdict at_least "$(ratio "$a" "$b")" 0.8)"
done

# ---- row 4: add through to the upstream ----

say "row 4: add, durable ledger, simulated upstream"
cat >"$dir/add.lua" <<EOF
wrk.method = "POST"
wrk.body = "key=$KEY&action=add&service=$SERVICE&link=https://example.com/p&quantity=$QTY"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) placed = 0; refused = 0 end
function response(status, headers, body)
  if status == 200 and body:find('"order"', 1, true) then placed = placed + 1 else refused = refused + 1 end
end
function done(summary, latency, requests)
  local p, r = 0, 0
  for _, t in ipairs(threads) do p = p + t:get("placed"); r = r + t:get("refused") end
  io.write(string.format("ADD_PLACED %d\nADD_REFUSED %d\n", p, r))
end
EOF
for r in $(seq 1 "$ROUNDS"); do
  # Pinned like the server side it stands for.
  "${ON_SERVER[@]}" "$LOADKIT" sqlite-baseline --db "$dir/bare.db" --seconds "$DURATION" \
    >"$dir/sqlite-baseline-$r.json" || die "sqlite-baseline failed"
  for m in "${models[@]}"; do
    # No warm-up here: every request is an order.
    WARMUP=0 wrk_run "panelgate-add-$m-$r" "${main_urls[$m]}" -s "$dir/add.lua"
    placed=$(awk '/^ADD_PLACED/ {print $2}' "$dir/wrk-panelgate-add-$m-$r.txt")
    refused=$(awk '/^ADD_REFUSED/ {print $2}' "$dir/wrk-panelgate-add-$m-$r.txt")
    [ -n "$placed" ] || die "wrk did not report the add counts"
    [ "$placed" -gt 0 ] || die "no add succeeded under load ($m)"
    if [ "$refused" -gt 0 ]; then notes+=("add row ($m): $refused requests were not placed (not 200 with an order id)"); fi
    # Orders per second: wrk's rate of the replies that placed an order.
    awk -v r="$(rps "panelgate-add-$m-$r")" -v p="$placed" -v f="$refused" 'BEGIN { print r * p / (p + f) }' \
      >"$dir/orders-per-sec-$m-$r.txt"
  done
done
bare=$(median_of json_field per_sec sqlite-baseline)
bare_p99=$(median_of json_field p99_us sqlite-baseline)
for m in "${models[@]}"; do
  orders_per_sec=$(median_of plain "orders-per-sec-$m")
  add_p99=$(median_of p99_us "panelgate-add-$m")
  row "add, to upstream, durable$(tag "$m")" "bare SQLite: $(fmt0 "$bare") orders/s (p99 $(fmt0 "$bare_p99") us)" \
    "$(fmt0 "$orders_per_sec") orders/s (p99 $(fmt0 "$add_p99") us)" "$(ratio "$orders_per_sec" "$bare")x" \
    ">= 0.5x" "$(verdict at_least "$(ratio "$orders_per_sec" "$bare")" 0.5)"
done

# ---- row 6 (measured now, after rows 1-4): memory ----

declare -A hwm_kib rss_kib
for m in "${models[@]}"; do
  hwm_kib[$m]=$(awk '/^VmHWM:/ {print $2}' "/proc/${main_pids[$m]}/status")
  rss_kib[$m]=$(awk '/^VmRSS:/ {print $2}' "/proc/${main_pids[$m]}/status")
  stop "${main_pids[$m]}"
  "$LOADKIT" check --db "$dir/panelgate-$m.db" >"$dir/check-$m.json" || die "the ledger check failed ($m)"
done
orders_in_ledger=$(jq -r .orders "$dir/check-${models[0]}.json")

# ---- row 5: forwarded status ----

say "row 5: forwarded status at $LAT_RATE req/s (second gateway, every status refreshed upstream)"
# This row's upstream runs beside the server under test (core 0) and the client stays on core 1,
# for both sides alike: each path then crosses between cores twice (client -> server -> client)
# and the difference is the gateway's own work. With the upstream on the client's core, the
# gateway's path would cross four times to the direct path's none, and this VM's cross-core
# wake-ups (tens of microseconds each) would be counted as the gateway's.
start simulator-forward "${ON_SERVER[@]}" "$PANELGATE" --config "$dir/no-simulator.yaml" simulate \
  --listen 127.0.0.1:0 --key "$SIM_KEY" --services 3000 --speed 1 --balance 1000000000000
SIM_URL=$(listening_on simulator-forward "$started")
SIM_BASE=${SIM_URL%/api/v2}
declare -A fwd_ids fwd_urls fwd_pids forwarded asked
for m in "${models[@]}"; do
  write_config "$dir/config-forward-$m.yaml" "$dir/forward-$m.db" 0ms "$m"
  start_gateway "gateway-forward-$m" "$dir/config-forward-$m.yaml"
  fwd_pids[$m]=$gw_pid
  fwd_urls[$m]=$GW_URL
  # sim-fate=hold: the simulator never finishes it, so the gateway has to ask upstream every time.
  reply=$(post "$GW_URL" -d "key=$KEY&action=add&service=$SERVICE&quantity=$QTY" \
    --data-urlencode "link=https://example.com/f?sim-fate=hold")
  fwd_ids[$m]=$(jq -r '.order // empty' <<<"$reply")
  [ -n "${fwd_ids[$m]}" ] || die "add through the second gateway ($m) failed: $reply"
  up_id=$("$PANELGATE" order show "${fwd_ids[$m]}" --config "$dir/config-forward-$m.yaml" | jq -r '.upstream_order // empty')
  [ -n "$up_id" ] || die "order ${fwd_ids[$m]} has no upstream order id"
  forwarded[$m]=0
  asked[$m]=0
done
sim_statuses() { curl -sS --max-time 5 "$SIM_BASE/_sim/state?key=$SIM_KEY" | jq '.requests.status // 0'; }
for r in $(seq 1 "$ROUNDS"); do
  for m in "${models[@]}"; do
    before=$(sim_statuses)
    "${ON_CLIENT[@]}" "$LOADKIT" latency --url "${fwd_urls[$m]}" --body "key=$KEY&action=status&order=${fwd_ids[$m]}" \
      --rate "$LAT_RATE" --seconds "$LAT_SECONDS" --connections "$LAT_CONNECTIONS" >"$dir/latency-gateway-$m-$r.json" ||
      die "latency run against the gateway ($m) failed"
    forwarded[$m]=$((forwarded[$m] + $(sim_statuses) - before))
    asked[$m]=$((asked[$m] + $(jq -r .sent "$dir/latency-gateway-$m-$r.json") + LAT_CONNECTIONS))
  done
  "${ON_CLIENT[@]}" "$LOADKIT" latency --url "$SIM_URL" --body "key=$SIM_KEY&action=status&order=$up_id" \
    --rate "$LAT_RATE" --seconds "$LAT_SECONDS" --connections "$LAT_CONNECTIONS" >"$dir/latency-direct-$r.json" ||
    die "latency run against the simulator failed"
  for side in "${models[@]/#/gateway-}" direct; do
    errs=$(jq -r .errors "$dir/latency-$side-$r.json")
    if [ "$errs" != 0 ]; then notes+=("forwarded row, $side: $errs errors"); fi
  done
done
for m in "${models[@]}"; do stop "${fwd_pids[$m]}"; done
d50=$(median_of json_field p50_us latency-direct) d99=$(median_of json_field p99_us latency-direct)
for m in "${models[@]}"; do
  g50=$(median_of json_field p50_us "latency-gateway-$m") g99=$(median_of json_field p99_us "latency-gateway-$m")
  add50=$(fmt0 "$(awk -v a="$g50" -v b="$d50" 'BEGIN { print a - b }')")
  add99=$(fmt0 "$(awk -v a="$g99" -v b="$d99" 'BEGIN { print a - b }')")
  row "forwarded status, $LAT_RATE req/s$(tag "$m")" "direct: p50 $(fmt0 "$d50") us, p99 $(fmt0 "$d99") us" \
    "p50 $(fmt0 "$g50") us, p99 $(fmt0 "$g99") us" "$(signed "$add50") us / $(signed "$add99") us" \
    "<= +100 us / +1000 us" "$(verdict test "$add50" -le 100 -a "$add99" -le 1000)"
  notes+=("forwarded row ($m): ${forwarded[$m]} of ${asked[$m]} gateway statuses (warm-ups included) were refreshed upstream")
  # A status in the same millisecond as the last refresh is still fresh at 0ms; most must not be.
  if [ $((forwarded[$m] * 2)) -lt "${asked[$m]}" ]; then
    notes+=("forwarded row ($m): WARNING, under half of the statuses were forwarded: the row mostly measures the ledger path")
  fi
done

for m in "${models[@]}"; do
  hwm_mib=$(awk -v k="${hwm_kib[$m]}" 'BEGIN { printf "%.1f", k / 1024 }')
  row "memory (peak RSS after rows 1-4)$(tag "$m")" "-" "VmHWM $hwm_mib MiB (VmRSS $(awk -v k="${rss_kib[$m]}" 'BEGIN { printf "%.1f", k / 1024 }') MiB)" \
    "-" "<= 64 MiB" "$(verdict test "${hwm_kib[$m]}" -le $((64 * 1024)))"
done

# ---- the table ----

elapsed=$(($(date +%s) - started_at))
header=(
  "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), nproc $cores ($pinning)"
  "kernel: $(uname -sr)"
  "catalog: $(jq length "$dir/services.json") services, $plain_bytes bytes plain, $gzip_bytes bytes gzip"
  "orders in the ledger: $orders_in_ledger (seeded $SEED_ORDERS; balance = sum of entries for every client)"
  "wrk: -t1 -c$CONNECTIONS -d${DURATION}s, median of $ROUNDS round(s); latency: $LAT_RATE req/s for ${LAT_SECONDS}s on $LAT_CONNECTIONS connections, from the scheduled instant"
  "runtime models: ${models[*]}${RUNTIME_THREADS:+, $RUNTIME_THREADS threads}"
  "time: ${elapsed}s after the build"
)
table_rows=("path|baseline|panelgate|ratio|target|result" "${rows[@]}")
widths=(0 0 0 0 0 0)
for r in "${table_rows[@]}"; do
  IFS='|' read -r -a cells <<<"$r"
  for i in "${!cells[@]}"; do
    [ "${#cells[$i]}" -gt "${widths[$i]}" ] && widths[i]=${#cells[$i]}
  done
done
print_table() {
  local first=1
  for r in "${table_rows[@]}"; do
    IFS='|' read -r -a cells <<<"$r"
    local line="|"
    for i in "${!cells[@]}"; do line+=" $(printf "%-${widths[$i]}s" "${cells[$i]}") |"; done
    echo "$line"
    if [ "$first" = 1 ]; then
      line="|"
      for i in "${!cells[@]}"; do line+="$(printf '%*s' $((widths[i] + 2)) '' | tr ' ' -)|"; done
      echo "$line"
      first=0
    fi
  done
}
# report PREFIX: the header lines, the table and the notes, each line of prose after PREFIX.
report() {
  local prefix=$1
  for h in "${header[@]}"; do echo "$prefix$h"; done
  echo
  print_table
  if [ "${#notes[@]}" -gt 0 ]; then
    echo
    for n in "${notes[@]}"; do echo "${prefix}note: $n"; done
  fi
}
report "" | tee "$dir/table.txt"
if [ -n "${RESULTS:-}" ]; then
  { echo "# panelgate load benchmark"; echo; report "- "; } >"$RESULTS"
fi
