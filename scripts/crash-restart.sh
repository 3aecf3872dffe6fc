#!/usr/bin/env bash
# crash-restart.sh: the durability check users run.
#
# Starts a local cluster of `shardcore server` processes on 127.0.0.1, and for each iteration
# drives a checking workload (concurrent clients, a history, a final read of every key) while
# killing -9 random nodes (one in four iterations: every node at once) at random moments and
# restarting them. Each iteration uses fresh keys; its history is checked for linearizability
# and its acknowledged appends are looked for in the final values.
#
# Usage: scripts/crash-restart.sh [ITERATIONS] [NODES]     (defaults: 20, 3)
# Env:   SEED (default: the time), SECONDS_PER_ITERATION (default 6), CLIENTS (default 8),
#        KEEP=1 keeps the data directory, SHARDCORE=path to a built binary.
# Exit:  0 when no acknowledged write was lost and every history is linearizable; 1 otherwise.
set -euo pipefail

iterations="${1:-20}"
nodes="${2:-3}"
seed="${SEED:-$(date +%s)}"
per_iteration="${SECONDS_PER_ITERATION:-6}"
clients="${CLIENTS:-8}"
groups=4

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${SHARDCORE:-}" ]; then
    cargo build --release --quiet --bin shardcore
    SHARDCORE="$PWD/target/release/shardcore"
fi

dir="$(mktemp -d -t shardcore-crash-XXXXXX)"
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = "1" ]; then
        echo "data and logs kept in $dir"
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT

# Ports: a free-looking base derived from the pid, client port base+2(i-1), peer port +1.
base=$((20000 + ($$ % 2000) * 10))
client_addr() { echo "127.0.0.1:$((base + ($1 - 1) * 2))"; }
peer_addr() { echo "127.0.0.1:$((base + ($1 - 1) * 2 + 1))"; }

endpoints=""
for i in $(seq 1 "$nodes"); do
    endpoints="${endpoints:+$endpoints,}$(client_addr "$i")"
done

start_node() {
    local i="$1" args=()
    for j in $(seq 1 "$nodes"); do
        if [ "$j" != "$i" ]; then
            args+=(--peer "$j=$(peer_addr "$j")/$(client_addr "$j")")
        fi
    done
    "$SHARDCORE" server --node-id "$i" --client-addr "$(client_addr "$i")" \
        --peer-addr "$(peer_addr "$i")" --data-dir "$dir/node-$i" --cores 1 --no-pin \
        --groups "$groups" --log-level warn "${args[@]}" >>"$dir/node-$i.log" 2>&1 &
    pids[$i]=$!
}

kill_node() {
    local i="$1"
    if [ -n "${pids[$i]:-}" ]; then
        kill -9 "${pids[$i]}" 2>/dev/null || true
        wait "${pids[$i]}" 2>/dev/null || true
        pids[$i]=""
    fi
}

# A small deterministic random source from the seed (bash's RANDOM, seeded).
RANDOM="$seed"

for i in $(seq 1 "$nodes"); do start_node "$i"; done
echo "crash-restart: $nodes nodes, $iterations iterations of ${per_iteration} s, $clients clients, SEED=$seed"
echo "data and logs: $dir"

total_acked=0
total_lost=0
total_ops=0
failed=0
crashes=0
for it in $(seq 1 "$iterations"); do
    "$SHARDCORE" workload --endpoints "$endpoints" --groups "$groups" --clients "$clients" \
        --keys 8 --seconds "$per_iteration" --seed "$((seed + it))" --key-prefix "it$it-" \
        --history "$dir/history-$it.jsonl" >"$dir/workload-$it.out" 2>&1 &
    workload=$!
    # Kill at a random moment in the first two thirds of the iteration.
    sleep "$(awk -v r="$RANDOM" -v s="$per_iteration" 'BEGIN { printf "%.2f", 0.5 + (r / 32768) * s * 0.6 }')"
    if [ $((RANDOM % 4)) -eq 0 ]; then
        victims="$(seq 1 "$nodes" | tr '\n' ' ')"
    else
        victims="$((RANDOM % nodes + 1))"
    fi
    for v in $victims; do kill_node "$v"; crashes=$((crashes + 1)); done
    sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.2 + (r / 32768) * 1.5 }')"
    for v in $victims; do start_node "$v"; done
    status=0
    wait "$workload" || status=$?
    result="$(grep '^RESULT' "$dir/workload-$it.out" || true)"
    acked="$(sed -n 's/.*acknowledged_writes=\([0-9]*\).*/\1/p' <<<"$result")"
    lost="$(sed -n 's/.*lost_writes=\([0-9]*\).*/\1/p' <<<"$result")"
    ops="$(sed -n 's/.*ops=\([0-9]*\).*/\1/p' <<<"$result")"
    total_acked=$((total_acked + ${acked:-0}))
    total_lost=$((total_lost + ${lost:-0}))
    total_ops=$((total_ops + ${ops:-0}))
    verdict="ok"
    if [ "$status" -ne 0 ] || [ -z "$result" ]; then
        verdict="FAILED (see $dir/workload-$it.out)"
        failed=$((failed + 1))
        KEEP=1
    fi
    printf 'iteration %2d: killed [%s] %s -> %s\n' "$it" "$(echo $victims)" "${result#RESULT }" "$verdict"
done

echo
echo "SUMMARY iterations=$iterations nodes=$nodes crashes=$crashes ops=$total_ops acknowledged_writes=$total_acked writes_lost=$total_lost failed_iterations=$failed SEED=$seed"
if [ "$failed" -eq 0 ] && [ "$total_lost" -eq 0 ]; then
    echo "PASS: every history linearizable, no acknowledged write lost"
    exit 0
fi
echo "FAIL: SEED=$seed"
exit 1
