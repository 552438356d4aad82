#!/usr/bin/env bash
# hoist's one test command (CI runs exactly this through .ci/run).
#
#   scripts/test.sh [--quick] [NEXTEST_ARGS...]
#
# Stages, in order, stopping at the first that fails:
#   env      scripts/test-env.sh: install and start Docker, PostgreSQL, registries, moto,
#            a Kubernetes v1.20 cluster (built once, ~10-20 min; HOIST_TEST_SKIP_K8S=1 skips it)
#            and install Debian's chromium + chromedriver (HOIST_TEST_SKIP_BROWSER=1 skips them)
#   fmt      cargo fmt --all -- --check                                   (not with --quick)
#   clippy   cargo clippy --workspace --all-targets --locked -- -D warnings (not with --quick)
#   nextest  cargo nextest run --workspace --locked --no-fail-fast NEXTEST_ARGS...
#            (cargo test --workspace --locked --no-fail-fast if cargo-nextest is missing)
#   doctest  cargo test --workspace --doc --locked        (skipped when NEXTEST_ARGS are given)
#
# Every argument other than --quick goes to nextest, e.g. a filter:
#   scripts/test.sh --quick -- docker     scripts/test.sh -E 'test(/e2e/)'
# CARGO_TARGET_DIR defaults to $HOME/.cache/hoist/target (kept outside the clone);
# CARGO_INCREMENTAL defaults to 0 (its caches only grow in a persistent target dir).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

quick=0
args=()
for a in "$@"; do
    case "$a" in
        --quick) quick=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *) args+=("$a") ;;
    esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hoist/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The target dir persists across runs; incremental caches only grow (gigabytes per
# week of CI) and a from-scratch CI build gains nothing from them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
if [ "$CARGO_INCREMENTAL" = 0 ]; then
    rm -rf "$CARGO_TARGET_DIR/debug/incremental"
fi

timings=()
t_all=$SECONDS
# Output of the test stages, kept to count results for the closing line.
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT

# tally: "P passed, F failed, S skipped" over nextest's Summary lines and the
# "test result:" lines of cargo test (fallback runner and doc tests).
tally() {
    local p=0 f=0 s=0 line n
    while IFS= read -r line; do
        if [[ "$line" =~ ^[[:space:]]*Summary\ \[.*tests?\ run: ]]; then
            [[ "$line" =~ ([0-9]+)\ passed ]] && p=$((p + BASH_REMATCH[1]))
            [[ "$line" =~ ([0-9]+)\ failed ]] && f=$((f + BASH_REMATCH[1]))
            [[ "$line" =~ ([0-9]+)\ timed\ out ]] && f=$((f + BASH_REMATCH[1]))
            [[ "$line" =~ ([0-9]+)\ skipped ]] && s=$((s + BASH_REMATCH[1]))
        elif [[ "$line" =~ ^test\ result:\ [A-Za-z]+\.\ ([0-9]+)\ passed\;\ ([0-9]+)\ failed\;\ ([0-9]+)\ ignored ]]; then
            p=$((p + BASH_REMATCH[1]))
            f=$((f + BASH_REMATCH[2]))
            n=${BASH_REMATCH[3]}
            s=$((s + n))
        fi
    done < <(sed 's/\x1b\[[0-9;]*m//g' "$test_log")
    echo "tests: $p passed, $f failed, $s skipped"
}

summary() {
    local line
    echo "==> stage times:"
    for line in "${timings[@]}"; do echo "      $line"; done
    echo "      total ${1}s"
    if [[ -s "$test_log" ]]; then tally; fi
}

# stage NAME CMD...: run CMD, print its wall time, stop the whole run if it fails.
# (TEE=1: also keep CMD's output, merged, for the closing tally.)
stage() {
    local name=$1 start=$SECONDS rc=0
    shift
    echo "==> [$name] $*"
    if [[ "${TEE:-0}" == 1 ]]; then
        "$@" 2>&1 | tee -a "$test_log" || rc=$?
    else
        "$@" || rc=$?
    fi
    local took=$((SECONDS - start))
    if ((rc != 0)); then
        timings+=("$(printf '%-8s FAILED %ss' "$name" "$took")")
        echo "==> [$name] FAILED (exit $rc) after ${took}s"
        summary $((SECONDS - t_all))
        echo "==> scripts/test.sh: stage '$name' failed"
        exit "$rc"
    fi
    timings+=("$(printf '%-8s ok     %ss' "$name" "$took")")
    echo "==> [$name] ok in ${took}s"
}

skip() {
    timings+=("$(printf '%-8s skipped (%s)' "$1" "$2")")
    echo "==> [$1] skipped ($2)"
}

env_file="${HOIST_TEST_ENV_FILE:-${HOIST_TEST_CACHE_DIR:-$HOME/.cache/hoist}/test-env.sh}"
# The export lines on stdout are not needed here: the env file is sourced below.
env_up() { "$ROOT/scripts/test-env.sh" start >/dev/null; }
stage env env_up
# shellcheck disable=SC1090
. "$env_file"
echo "==> env: $(grep -c '^export ' "$env_file") variables from $env_file; CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

if ((quick)); then
    skip fmt --quick
    skip clippy --quick
else
    stage fmt cargo fmt --all -- --check
    stage clippy cargo clippy --workspace --all-targets --locked -- -D warnings
fi

if cargo nextest --version >/dev/null 2>&1; then
    TEE=1 stage nextest cargo nextest run --workspace --locked --no-fail-fast "${args[@]}"
else
    echo "==> cargo-nextest not found: falling back to cargo test"
    TEE=1 stage test cargo test --workspace --locked --no-fail-fast "${args[@]}"
fi

if ((${#args[@]})); then
    skip doctest "test arguments given: ${args[*]}"
else
    TEE=1 stage doctest cargo test --workspace --doc --locked
fi

echo "==> scripts/test.sh: all stages passed"
summary $((SECONDS - t_all))
