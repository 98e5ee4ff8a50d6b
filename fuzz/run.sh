#!/usr/bin/env bash
# Runs every cargo-fuzz target (`cargo fuzz list`) for a bounded time and fails on any crash.
#
#   fuzz/run.sh                      # FUZZ_SECONDS=60 per target, as CI runs it
#   FUZZ_SECONDS=600 fuzz/run.sh     # longer, by hand
#   fuzz/run.sh upstream_reply       # only the targets named
#
# Each target starts from its committed seed corpus, fuzz/corpus/<target>/, which is passed
# second and so only read: what a run discovers goes to a temporary corpus that is thrown away
# (FUZZ_KEEP_CORPUS=DIR keeps it under DIR/<target>/ instead). A crash, a timeout or an
# out-of-memory leaves its input in fuzz/artifacts/<target>/ and makes the script exit 1 after
# the remaining targets have run; the paths are printed at the end.
#
# Settings (environment):
#   FUZZ_SECONDS     seconds per target (default 60)
#   FUZZ_MAX_LEN     longest input in bytes (default 8192)
#   FUZZ_RSS_MB      memory cap per target in MiB (default 2048)
#   FUZZ_TIMEOUT     seconds one input may take before it counts as a hang (default 10)
#   FUZZ_SANITIZER   none (default: the library forbids unsafe code) or address
#   FUZZ_TARGET_DIR  where the fuzz build goes (default fuzz/target, apart from the main build,
#                    whatever CARGO_TARGET_DIR says)
#
# No nightly toolchain is needed: cargo-fuzz passes -Z flags, which RUSTC_BOOTSTRAP=1 lets the
# stable compiler accept. cargo-fuzz is installed (`cargo install --locked`) if missing.
set -euo pipefail
cd "$(dirname "$0")"
fuzz_dir="$PWD"

seconds="${FUZZ_SECONDS:-60}"
max_len="${FUZZ_MAX_LEN:-8192}"
rss_mb="${FUZZ_RSS_MB:-2048}"
timeout="${FUZZ_TIMEOUT:-10}"
sanitizer="${FUZZ_SANITIZER:-none}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$fuzz_dir/target}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --locked --quiet cargo-fuzz --version "${CARGO_FUZZ_VERSION:-0.13.2}"
fi

# The fuzz crate has its own lock file; when the library's dependencies change it must follow.
if ! cargo metadata --locked --format-version 1 >/dev/null 2>&1; then
  echo "fuzz: warning: fuzz/Cargo.lock is out of date with the library's dependencies;" \
    "building anyway (run \`cd fuzz && cargo update -p panelgate\` and commit fuzz/Cargo.lock)" >&2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi

build=(--sanitizer "$sanitizer")
echo "fuzz: building ${targets[*]} (sanitizer: $sanitizer, target dir: $CARGO_TARGET_DIR)"
start=$SECONDS
cargo fuzz build "${build[@]}"
echo "fuzz: built in $((SECONDS - start)) s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
  seeds="$fuzz_dir/corpus/$target"
  mkdir -p "$seeds" "$fuzz_dir/artifacts/$target"
  if [ -n "${FUZZ_KEEP_CORPUS:-}" ]; then
    corpus="$FUZZ_KEEP_CORPUS/$target"
  else
    corpus="$work/$target"
  fi
  mkdir -p "$corpus"
  before="$work/$target.before"
  touch "$before"
  echo "fuzz: $target for ${seconds} s from $(find "$seeds" -type f | wc -l) seeds"
  # The first corpus directory is written to; the seeds, second, are only read.
  if cargo fuzz run "${build[@]}" "$target" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb="$rss_mb" \
    -timeout="$timeout" -print_final_stats=1 >"$work/$target.log" 2>&1; then
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+.*DONE)' \
      "$work/$target.log" | sed "s/^/fuzz: $target: /" || true
  else
    # The panic, then the end of libFuzzer's report; the whole log stays beside the artifacts.
    cp "$work/$target.log" "$fuzz_dir/artifacts/$target.log"
    grep -A 2 -E 'panicked at|ERROR: libFuzzer' "$work/$target.log" | head -n 20 >&2 || true
    grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse|INITED)|^ +([0-9]+: |at )' "$work/$target.log" |
      tail -n 30 >&2
    echo "fuzz: $target: full log in fuzz/artifacts/$target.log" >&2
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo >&2
  echo "fuzz: FAILED: ${failed[*]}" >&2
  for target in "${failed[@]}"; do
    find "$fuzz_dir/artifacts/$target" -type f -newer "$work/$target.before" |
      sed "s|^$fuzz_dir/|fuzz: crashing input: fuzz/|" >&2
  done
  echo "fuzz: replay one with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer TARGET artifacts/TARGET/FILE" >&2
fi
# One line in the plain form CI reads: targets that ran clean, targets that crashed.
echo "fuzz: ${#targets[@]} targets fuzzed, ${#failed[@]} crashed"
[ ${#failed[@]} -eq 0 ]
