#!/usr/bin/env bash
# crash-restart.sh: the durability check users run.
#
# Starts a local cluster of `shardcore server` processes on 127.0.0.1, and for each iteration
# drives a checking workload (concurrent clients, a history, a final read of every key) while
# killing -9 random nodes (one in four iterations: every node at once) at random moments and
# restarting them. Each iteration uses fresh keys; its history is checked for linearizability
# and its acknowledged appends are looked for in the final values.
#
# With --sharded, the same for the sharded KV with shards moving: the nodes run the controller
# and 4 shard groups, groups 1-3 are joined at start, the workload takes the sharded path, and
# each iteration, at its random moment, changes the configuration (moves a random shard to a
# random joined group, or makes a group leave or join) and at once kills -9 the victims: the
# kill lands while groups pull, install and delete the shards the change moved.
#
# Usage: scripts/crash-restart.sh [--sharded] [ITERATIONS] [NODES]     (defaults: 20, 3)
# Env:   SEED (default: the time), SECONDS_PER_ITERATION (default 6), CLIENTS (default 8),
#        SHARDS (with --sharded; default 16), KEEP=1 keeps the data directory,
#        SHARDCORE=path to a built binary, PREFERRED_LEADER (the node that leads every group
#        once up and caught up, as `cluster local` sets; default 1, 0: none; node 1's crashes
#        then move leadership away and its restarts hand it back).
# Exit:  0 when every iteration completed operations, no acknowledged write was lost and every
#        history is linearizable; 1 otherwise.
set -euo pipefail

sharded=0
if [ "${1:-}" = "--sharded" ]; then
    sharded=1
    shift
fi
iterations="${1:-20}"
nodes="${2:-3}"
shards="${SHARDS:-16}"
seed="${SEED:-$(date +%s)}"
per_iteration="${SECONDS_PER_ITERATION:-6}"
clients="${CLIENTS:-8}"
groups=4

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${SHARDCORE:-}" ]; then
    cargo build --release --quiet --bin shardcore
    # Where cargo just built it: CARGO_TARGET_DIR (relative to here) when set. Running
    # ./target's binary instead ran a stale build whose servers refused their arguments.
    target="${CARGO_TARGET_DIR:-target}"
    case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
    SHARDCORE="$target/release/shardcore"
fi

dir="$(mktemp -d -t shardcore-crash-XXXXXX)"
# What the servers and the workload add in sharded mode.
server_mode=()
workload_mode=(--groups "$groups")
if [ "$sharded" = 1 ]; then
    server_mode=(--shards "$shards" --sharded)
    workload_mode=(--sharded)
fi
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
        --groups "$groups" "${server_mode[@]}" --log-level warn "${args[@]}" \
        --preferred-leader "${PREFERRED_LEADER:-1}" \
        >>"$dir/node-$i.log" 2>&1 &
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

ctl() {
    "$SHARDCORE" ctl --timeout-secs 20 --endpoints "$endpoints" "$@"
}

# Sharded mode: the groups in the configuration now (1-3 joined at start; 4 waits to join).
joined=(1 2 3)

# Sharded mode: one random configuration change: a move (half the time), else a leave of a
# joined group (while more than two are joined) or the join of one that is out. Sets `changed`
# to what it did (not printed: a command substitution would run it in a subshell and lose
# `joined`).
change() {
    local dice=$((RANDOM % 4)) out
    if [ "$dice" -lt 2 ]; then
        local shard=$((RANDOM % shards)) group="${joined[$((RANDOM % ${#joined[@]}))]}"
        out="$(ctl move "$shard" "$group" 2>&1)" || true
    elif [ "${#joined[@]}" -gt 2 ]; then
        local group="${joined[$((RANDOM % ${#joined[@]}))]}"
        out="$(ctl leave "$group" 2>&1)" || true
        if [[ "$out" == *left* ]]; then
            joined=($(printf '%s\n' "${joined[@]}" | grep -vx "$group"))
        fi
    else
        local group
        for group in 1 2 3 4; do
            if ! printf '%s\n' "${joined[@]}" | grep -qx "$group"; then break; fi
        done
        out="$(ctl join "$group" 2>&1)" || true
        if [[ "$out" == *joined* ]]; then joined+=("$group"); fi
    fi
    changed="$(echo "$out" | head -1); "
}

# A small deterministic random source from the seed (bash's RANDOM, seeded).
RANDOM="$seed"

for i in $(seq 1 "$nodes"); do start_node "$i"; done
mode="$([ "$sharded" = 1 ] && echo ", sharded, $shards shards" || true)"
echo "crash-restart: $nodes nodes$mode, $iterations iterations of ${per_iteration} s, $clients clients, SEED=$seed"
echo "data and logs: $dir"
if [ "$sharded" = 1 ] && ! ctl join 1 2 3 >"$dir/join.out" 2>&1; then
    echo "FAIL: could not join the shard groups (see $dir/join.out)"
    exit 1
fi
changed=""

total_acked=0
total_lost=0
total_ops=0
failed=0
crashes=0
for it in $(seq 1 "$iterations"); do
    "$SHARDCORE" workload --endpoints "$endpoints" "${workload_mode[@]}" --clients "$clients" \
        --keys 8 --seconds "$per_iteration" --seed "$((seed + it))" --key-prefix "it$it-" \
        --history "$dir/history-$it.jsonl" >"$dir/workload-$it.out" 2>&1 &
    workload=$!
    # Kill at a random moment in the first two thirds of the iteration.
    sleep "$(awk -v r="$RANDOM" -v s="$per_iteration" 'BEGIN { printf "%.2f", 0.5 + (r / 32768) * s * 0.6 }')"
    if [ "$sharded" = 1 ]; then change; fi
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
    elif [ "${ops:-0}" -eq 0 ]; then
        # Every iteration has at least half a second before its first kill: no operation at
        # all means the cluster never served (a node that did not start: see its log).
        verdict="FAILED (no operation completed; see $dir/node-*.log)"
        failed=$((failed + 1))
        KEEP=1
    fi
    printf 'iteration %2d: %skilled [%s] %s -> %s\n' "$it" "$changed" "$(echo $victims)" \
        "${result#RESULT }" "$verdict"
done

echo
echo "SUMMARY iterations=$iterations nodes=$nodes crashes=$crashes ops=$total_ops acknowledged_writes=$total_acked writes_lost=$total_lost failed_iterations=$failed SEED=$seed"
if [ "$failed" -eq 0 ] && [ "$total_lost" -eq 0 ]; then
    echo "PASS: every history linearizable, no acknowledged write lost"
    exit 0
fi
echo "FAIL: SEED=$seed"
exit 1
