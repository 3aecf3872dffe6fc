#!/usr/bin/env bash
# shard-migration-bench.sh: one big shard moved live between shard groups, measured.
#
#   1. Starts a local sharded cluster (`shardcore cluster local --sharded`: 3 `shardcore server`
#      processes on 127.0.0.1, shard groups 1..SHARD_GROUPS joined, the nodes' default sizes).
#   2. Fills ONE shard (BIG_SHARD) with SIZE_MB of data: `shardcore-bench --only-shard` with
#      `--prefill yes`, values of VALUE_BYTES.
#   3. Runs an open-loop load on every OTHER shard (`shardcore-bench --skip-shard`, RATE
#      requests/s, half gets and half puts of 128 B, with `--history`) for BASELINE_SECS, then
#      moves the big shard to another group with `shardcore ctl move` while the load goes on,
#      and polls the new owner's group directly (`shardcore kv group-get`) until it serves the
#      shard (so the move's end is known to within one poll: a process start and a request,
#      tens of milliseconds). The load runs MOVE_WINDOW_SECS from the move's start (the move
#      must end in it).
#   4. Splits the load's history at the move's start and end: latency of the other shards'
#      requests before the move (the BASELINE_SECS before it), during it, and after it, by when
#      each was sent (the history counts from the load's start, which the script notes to within
#      milliseconds).
#   5. Garbage collection: the old owner deletes its copy once the new owner has it all, but its
#      disk shows that only at its next snapshot. The script writes GC_PROBE_MB (past the nodes'
#      64 MiB snapshot threshold) to another shard the old owner serves, so it snapshots, and
#      reports the old owner's snapshot files before the move and after, and each node's data
#      directory.
#
# It prints a table and one `MIGRATION` line of key=value pairs for scripts.
#
# Usage: scripts/shard-migration-bench.sh [SIZE_MB]                 (default 100)
# Env:   BIG_SHARD (0), SHARDS (16), SHARD_GROUPS (3), VALUE_BYTES (65536), RATE (2000),
#        CLIENTS (64: the load's outstanding limit), BASELINE_SECS (10), MOVE_WINDOW_SECS (90),
#        GC_PROBE_MB (80), PORT (7401: clients on PORT..PORT+2, peers from PORT+100),
#        KEEP=1 keeps the data directory and logs, SHARDCORE and SHARDCORE_BENCH (built
#        binaries; otherwise `cargo build --release` builds both into CARGO_TARGET_DIR or
#        target/).
# Needs python3 (to name the bench's keys and to read the history).
# Exit: 0 when the shard moved and the new owner serves it; 1 otherwise; 2 on a setup failure.
set -euo pipefail

SIZE_MB="${1:-100}"
BIG_SHARD="${BIG_SHARD:-0}"
SHARDS="${SHARDS:-16}"
SHARD_GROUPS="${SHARD_GROUPS:-3}"
VALUE_BYTES="${VALUE_BYTES:-65536}"
RATE="${RATE:-2000}"
CLIENTS="${CLIENTS:-64}"
BASELINE_SECS="${BASELINE_SECS:-10}"
MOVE_WINDOW_SECS="${MOVE_WINDOW_SECS:-90}"
GC_PROBE_MB="${GC_PROBE_MB:-80}"
PORT="${PORT:-7401}"
NODES=3

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${SHARDCORE:-}" || -z "${SHARDCORE_BENCH:-}" ]]; then
    (cd "$ROOT" && cargo build --release --quiet -p shardcore -p shardcore-bench)
    TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
    SHARDCORE="${SHARDCORE:-$TARGET/release/shardcore}"
    SHARDCORE_BENCH="${SHARDCORE_BENCH:-$TARGET/release/shardcore-bench}"
fi
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 2; }

dir="$(mktemp -d -t shardcore-migration-XXXXXX)"
cluster_pid=""
load_pid=""

cleanup() {
    if [[ -n "$load_pid" ]]; then kill -9 "$load_pid" 2>/dev/null || true; fi
    if [[ -n "$cluster_pid" ]]; then
        # `cluster local` stops its nodes on SIGTERM (and they die with it if it is killed).
        kill -TERM "$cluster_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$cluster_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$cluster_pid" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    if [[ "${KEEP:-0}" = "1" ]]; then
        echo "data and logs kept in $dir"
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT

say() { echo "shard-migration-bench: $*" >&2; }
die() { say "$*"; exit 2; }
# await_line FILE PATTERN PID SLEEP WHAT: waits (600 polls of SLEEP s at most) until FILE has a
# line matching PATTERN; stops the script if process PID (WHAT) ended first.
await_line() {
    local file=$1 pattern=$2 pid=$3 pause=$4 what=$5
    for _ in $(seq 1 600); do
        grep -q "$pattern" "$file" && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; die "$what stopped"; }
        sleep "$pause"
    done
}
now_ns() { date +%s%N; }

endpoints=""
for i in $(seq 1 "$NODES"); do
    endpoints="${endpoints:+$endpoints,}127.0.0.1:$((PORT + i - 1))"
done
ctl() { "$SHARDCORE" ctl --timeout-secs 30 --endpoints "$endpoints" "$@"; }
kv() { "$SHARDCORE" kv --timeout-secs "${KV_TIMEOUT:-30}" --endpoints "$endpoints" --sharded "$@"; }
bench() {
    "$SHARDCORE_BENCH" --servers "$endpoints" --sharded --shards "$SHARDS" --server-pids none \
        --quiet "$@"
}

# The owner of shard $1 in the latest configuration (`ctl query` prints runs of shards as
# "shards 0-5 -> g1").
owner_of() {
    ctl query | awk -v s="$1" '
        $1 == "shards" {
            n = split($2, r, "-"); lo = r[1]; hi = (n == 2 ? r[2] : r[1])
            if (s + 0 >= lo + 0 && s + 0 <= hi + 0) { sub("^g", "", $4); print $4 }
        }'
}

# The bench's key names of shard $1 with prefix $2 (the first $3 of them, or only the one at
# position $4 when given): `shardcore-bench --only-shard` names key i by the i-th number whose
# name hashes to the shard (FNV-1a 64 mod SHARDS, as `shardkv::key_to_shard`).
bench_keys() {
    python3 - "$1" "$2" "$3" "$SHARDS" <<'PY'
import sys
shard, prefix, count, shards = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def shard_of(key):
    h = 0xcbf29ce484222325
    for b in key:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h % shards
width = max(16 - len(prefix), 0)
found, n = 0, 0
while found < count:
    name = f"{prefix}{n:0{width}d}"
    if shard_of(name.encode()) == shard:
        print(name)
        found += 1
    n += 1
PY
}

# Bytes of group $2's snapshot files on node $1, and of node $1's data directory.
snapshot_bytes() {
    local files=("$dir"/cluster/node-"$1"/core-*/snap/snap-"$2"-*.snap)
    if [[ -e "${files[0]}" ]]; then du -cb "${files[@]}" | tail -1 | cut -f1; else echo 0; fi
}
data_bytes() { du -sb "$dir/cluster/node-$1" | cut -f1; }
per_node() { local out=""; for i in $(seq 1 "$NODES"); do out="$out $("$@" "$i")"; done; echo "${out# }"; }
old_snapshots() { per_node snapshot_bytes_of_old; }
snapshot_bytes_of_old() { snapshot_bytes "$1" "$old_owner"; }

# 1. The cluster.
say "starting a 3-node sharded cluster ($SHARD_GROUPS groups, $SHARDS shards) in $dir"
"$SHARDCORE" cluster local --sharded --nodes "$NODES" --groups "$SHARD_GROUPS" --shards "$SHARDS" \
    --base-port "$PORT" --data-dir "$dir/cluster" --log-level warn >"$dir/cluster.out" 2>&1 &
cluster_pid=$!
await_line "$dir/cluster.out" "^serving " "$cluster_pid" 0.2 "the cluster"
grep -q "^serving " "$dir/cluster.out" || { cat "$dir/cluster.out" >&2; die "the cluster did not come up in 120 s"; }
grep -q "FAILED" "$dir/cluster.out" && { cat "$dir/cluster.out" >&2; die "the cluster's start-up check failed"; }

old_owner="$(owner_of "$BIG_SHARD")"
[[ -n "$old_owner" ]] || die "no owner for shard $BIG_SHARD in: $(ctl query)"
new_owner=$((old_owner % SHARD_GROUPS + 1))

# 2. One big shard.
keys=$((SIZE_MB * 1048576 / VALUE_BYTES))
(( keys >= 1 )) || die "SIZE_MB $SIZE_MB is less than one value of $VALUE_BYTES bytes"
say "loading $keys keys x $VALUE_BYTES B into shard $BIG_SHARD (group $old_owner)"
load_started=$(now_ns)
bench --only-shard "$BIG_SHARD" --keys "$keys" --value-bytes "$VALUE_BYTES" --key-prefix big \
    --prefill yes --workload put --ops 1 --warmup-secs 0 --concurrency 1 \
    >"$dir/fill.out" 2>"$dir/fill.err" || { cat "$dir/fill.err" >&2; die "loading failed"; }
load_secs=$(python3 -c "print(f'{($(now_ns) - $load_started) / 1e9:.1f}')")
fill_line="$(grep "prefilled in" "$dir/fill.err" || true)"
say "${fill_line#shardcore-bench: }"
if ! grep -q "errors 0, timeouts 0" <<<"$fill_line"; then
    say "WARNING: some puts of the big shard failed: it holds less than $SIZE_MB MiB"
fi
mapfile -t big_keys < <(bench_keys "$BIG_SHARD" big "$keys")
probe_key="${big_keys[$((keys - 1))]}"
KV_TIMEOUT=10 kv get "$probe_key" >/dev/null || die "the big shard's last key $probe_key is missing"

# The other shards' key space, written once before the measured load.
say "filling the load's 10000 keys on the other shards"
bench --skip-shard "$BIG_SHARD" --keys 10000 --value-bytes 128 --key-prefix bg --prefill yes \
    --workload put --ops 1 --warmup-secs 0 >"$dir/bg-fill.out" 2>"$dir/bg-fill.err" ||
    { cat "$dir/bg-fill.err" >&2; die "filling the load's keys failed"; }

snap_before="$(old_snapshots)"
data_before="$(per_node data_bytes)"

# 3. The load, and the move in its middle.
total_secs=$((1 + BASELINE_SECS + MOVE_WINDOW_SECS))
say "load on the other shards: $RATE req/s open loop for ${total_secs} s; the move after ${BASELINE_SECS} s"
load_t0=$(now_ns)
bench --skip-shard "$BIG_SHARD" --keys 10000 --value-bytes 128 --key-prefix bg --prefill no \
    --workload put --read-fraction 0.5 --mode open --rate "$RATE" --concurrency "$CLIENTS" \
    --warmup-secs 1 --duration-secs "$((BASELINE_SECS + MOVE_WINDOW_SECS))" \
    --history "$dir/load.jsonl" >"$dir/load.out" 2>"$dir/load.err" &
load_pid=$!
await_line "$dir/load.err" "answered in" "$load_pid" 0.1 "the load"
sleep "$((1 + BASELINE_SECS))"

say "moving shard $BIG_SHARD from group $old_owner to group $new_owner"
move_t1=$(now_ns)
ctl move "$BIG_SHARD" "$new_owner" >"$dir/move.out" 2>&1 || { cat "$dir/move.out" >&2; die "ctl move failed"; }
move_committed=$(now_ns)
moved=0
deadline=$((move_t1 + 600 * 1000000000))
while (( $(now_ns) < deadline )); do
    if KV_TIMEOUT=2 kv group-get "$new_owner" "$probe_key" >/dev/null 2>&1; then
        moved=1
        break
    fi
    sleep 0.05
done
move_t2=$(now_ns)
if (( moved )); then
    say "group $new_owner serves shard $BIG_SHARD"
else
    say "group $new_owner does not serve shard $BIG_SHARD after 600 s"
fi
(( move_t2 - load_t0 < total_secs * 1000000000 )) ||
    say "WARNING: the move outlasted the load (raise MOVE_WINDOW_SECS): 'during' is cut short"

load_status=0
wait "$load_pid" || load_status=$?
load_pid=""
(( load_status == 0 )) || { cat "$dir/load.err" >&2; say "the load exited with $load_status"; }

# A sample of the big shard's keys at the new owner.
missing=0
for key in "${big_keys[0]}" "${big_keys[$((keys / 2))]}" "$probe_key"; do
    KV_TIMEOUT=10 kv group-get "$new_owner" "$key" >/dev/null 2>&1 || missing=$((missing + 1))
done

# 5. The old owner after garbage collection.
gc_shard="$(ctl query | awk -v g="g$old_owner" -v big="$BIG_SHARD" '
    $1 == "shards" && $4 == g {
        n = split($2, r, "-"); lo = r[1]; hi = (n == 2 ? r[2] : r[1])
        for (s = lo; s <= hi; s++) if (s != big) { print s; exit }
    }')"
snap_after=""
if [[ -n "$gc_shard" ]]; then
    say "writing $GC_PROBE_MB MiB to shard $gc_shard (still group $old_owner's) so that it snapshots"
    bench --only-shard "$gc_shard" --keys 1 --value-bytes 1048576 --key-prefix gc --prefill no \
        --workload put --ops "$GC_PROBE_MB" --warmup-secs 0 --concurrency 1 \
        >"$dir/gc.out" 2>"$dir/gc.err" || { cat "$dir/gc.err" >&2; say "the GC probe failed"; }
    shard_bytes=$((keys * VALUE_BYTES))
    for _ in $(seq 1 300); do
        snap_after="$(old_snapshots)"
        small=1
        for b in $snap_after; do (( b < shard_bytes / 4 )) || small=0; done
        (( small )) && break
        sleep 0.2
    done
else
    say "group $old_owner serves no other shard: no GC probe"
    snap_after="$(old_snapshots)"
fi
data_after="$(per_node data_bytes)"

# 4. The history, split at the move.
python3 - "$dir/load.jsonl" "$load_t0" "$move_t1" "$move_t2" "$BASELINE_SECS" <<'PY' >"$dir/windows.txt"
import json, sys
path, t0, t1, t2, baseline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
# Times relative to the load's start (its epoch is within milliseconds of t0).
start, end = t1 - t0, t2 - t0
windows = {"before": [], "during": [], "after": []}
failed = {"before": 0, "during": 0, "after": 0}
first = last = None
with open(path) as f:
    for line in f:
        op = json.loads(line)
        call = op["call_ns"]
        if call < start - baseline * 1e9:
            continue
        name = "before" if call < start else ("during" if call < end else "after")
        if op["ok"] is None or op["ok"] is False:
            failed[name] += 1
        else:
            windows[name].append(op["return_ns"] - call)
        last = call if last is None else max(last, call)
def q(values, p):
    if not values:
        return 0.0
    values.sort()
    return values[min(len(values) - 1, int(p * len(values)))] / 1e6
spans = {"before": baseline, "during": (end - start) / 1e9,
         "after": max(((last or end) - end) / 1e9, 0.0)}
for name in ("before", "during", "after"):
    v = windows[name]
    print(name, f"{spans[name]:.1f}", len(v), failed[name], f"{q(v, 0.5):.2f}", f"{q(v, 0.99):.2f}",
          f"{q(v, 0.999):.2f}", f"{(max(v) / 1e6 if v else 0.0):.2f}")
PY

secs() { python3 -c "print(f'{($2 - $1) / 1e9:.2f}')"; }
move_secs="$(secs "$move_t1" "$move_t2")"
ctl_secs="$(secs "$move_t1" "$move_committed")"
sum() { local t=0; for b in "$@"; do t=$((t + b)); done; echo "$t"; }
mib() { python3 -c "print(f'{$1 / 1048576:.1f}')"; }

echo
echo "== shard migration: shard $BIG_SHARD, $keys keys x $VALUE_BYTES B = $(mib $((keys * VALUE_BYTES))) MiB, group $old_owner -> group $new_owner"
echo "   cluster: $NODES nodes (cluster local, default sizes), $SHARD_GROUPS groups, $SHARDS shards; loaded in ${load_secs} s"
echo
if (( moved )); then
    echo "move: ctl move committed in ${ctl_secs} s; group $new_owner served the shard ${move_secs} s after the move began"
else
    echo "move: NOT finished ${move_secs} s after it began"
fi
echo "      sampled keys missing at the new owner: $missing of 3"
echo
echo "other shards' requests ($RATE req/s open loop, half gets, half 128 B puts), by when they were sent:"
printf "  %-7s %8s %9s %7s %8s %8s %9s %8s\n" window secs ops failed p50_ms p99_ms p999_ms max_ms
while read -r name span ops failed p50 p99 p999 max; do
    printf "  %-7s %8s %9s %7s %8s %8s %9s %8s\n" "$name" "$span" "$ops" "$failed" "$p50" "$p99" "$p999" "$max"
done <"$dir/windows.txt"
grep "^RESULT" "$dir/load.out" | sed 's/^/  whole load: /' || true
echo
echo "old owner (group $old_owner) snapshot bytes per node: before the move [$snap_before], after GC [$snap_after]"
echo "  (before: its latest snapshot, 0 when it took none: the shard was then only in its log)"
echo "data directory bytes per node: before the move [$data_before], after GC [$data_after]"
echo "  (every node hosts every group, so the new owner's copy is on the same disks; WAL"
echo "   segments are preallocated, 64 MiB each, and freed once no group needs their entries)"

p99() { awk -v w="$1" '$1 == w { print $6 }' "$dir/windows.txt"; }
echo
echo "MIGRATION size_bytes=$((keys * VALUE_BYTES)) keys=$keys from=$old_owner to=$new_owner" \
    "moved=$moved move_secs=$move_secs p99_before_ms=$(p99 before) p99_during_ms=$(p99 during)" \
    "p99_after_ms=$(p99 after) old_owner_snapshot_bytes_before=$(sum $snap_before)" \
    "old_owner_snapshot_bytes_after=$(sum $snap_after) missing_keys=$missing"

(( moved && missing == 0 )) || exit 1
