#!/usr/bin/env bash
# shardcore and etcd side by side, on the same workloads, in one run, on this machine.
#
# The cells are the bar's table (issue 6): 100% put at 1, 16, 64 and 256 clients; 90% get /
# 10% put at 64 and 256 clients; key 16 B, value 128 B, 100,000 keys, uniform, linearizable
# gets, every write fsynced before it is acknowledged. Each cell is closed loop: C clients,
# each with one request in flight.
#
#   1. etcd: a fresh 3-member etcd 3.4 on 127.0.0.1 (../shared/peers/start-etcd.sh), each cell
#      run by etcd-bench (../shared/peers/etcd-bench) with --progress; the etcd members' and
#      etcd-bench's CPU are read from /proc over the measured phase from its second 1 s tick to
#      its end (ops in that window = ops - ops of the first second); then etcd is stopped.
#   2. shardcore: a fresh `shardcore cluster local` (3 nodes on 127.0.0.1), each cell run by
#      shardcore-bench --servers ... --server-pids auto, which reads the servers' and its own
#      CPU over its measured phase; then the cluster is stopped.
#   Only one of the two clusters runs at a time. Both prefill the key space (outside the
#   measured window) before their first cell that reads.
#   3. The table: ops/s, p50, p99, CPU µs per op (servers / load generator) for both, the
#      ratios, and the foreign CPU (other processes on this shared machine, % of all CPUs)
#      during each cell, which says how much to trust it.
#
# Usage: scripts/bench-vs-etcd.sh [--quick] [--out DIR]
#   --quick   3 s measured + 1 s warm-up per cell (development); default 12 s + 2 s as the
#             peers' sweep does
#   --out     where RESULT lines, bench reports and the table go
#             (default /tmp/bench-vs-etcd-<UTC time>)
# Env knobs: DURATION, WARMUP (override the mode's), CELLS ("PUTFRAC:CLIENTS ...", default
#   "1.0:1 1.0:16 1.0:64 1.0:256 0.1:64 0.1:256"), SHARDCORE_CORES (cores per node; default the CPUs shared out among the 3 nodes, at least 1),
#   SHARDCORE_READ_INDEX=1 (shardcore's reads take a heartbeat round, as etcd's do, instead of
#   the default leader lease),
#   SHARDCORE_PREFERRED_LEADER (the node that leads every group, as `cluster local` does by
#   default: 1; 0 spreads leaders where elections put them),
#   BENCH_CORES (shardcore-bench's generator cores, default 1: one connection per node, every
#   request pipelined on it), ETCD_CONNS (etcd-bench's gRPC connections, spread over the
#   members; default etcd-bench's own, one per client, as the issue's etcd table was measured;
#   3 gives etcd what shardcore-bench uses, one per member, requests multiplexed on it),
#   SHARDCORE_PORT (7201: clients on 7201-7203, peers from 7301), PEERS (../shared/peers),
#   PEERS_DIR (/tmp/peers, etcd's data), ETCD_BENCH (a built etcd-bench; else it is built
#   into ETCD_BENCH_TARGET, default ~/.cache/shardcore/etcd-bench-target, since the peers'
#   folder may be read-only), NO_BUILD=1 (use the built shardcore binaries as they are),
#   CARGO_TARGET_DIR (where shardcore's release binaries are).
#
# Prerequisites: apt-get install etcd-server etcd-client protobuf-compiler (see
# ../shared/peers/README.md). Every run is bounded: each cell by its duration and a kill after
# duration + warm-up + 120 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
OUT=""
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT=$2; shift ;;
    --out=*) OUT=${1#--out=} ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ((QUICK)); then
  DURATION=${DURATION:-3}; WARMUP=${WARMUP:-1}
else
  DURATION=${DURATION:-12}; WARMUP=${WARMUP:-2}
fi
OUT=${OUT:-/tmp/bench-vs-etcd-$(date -u +%Y%m%dT%H%M%SZ)}
PEERS=${PEERS:-$ROOT/../shared/peers}
PEERS=$(cd "$PEERS" && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
ETCD_BENCH_TARGET=${ETCD_BENCH_TARGET:-$HOME/.cache/shardcore/etcd-bench-target}
mkdir -p "$OUT"

command -v etcd >/dev/null || {
  echo "etcd is not installed: apt-get install -y etcd-server etcd-client protobuf-compiler" >&2
  exit 2
}
if [[ "${NO_BUILD:-0}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release -p shardcore -p shardcore-bench)
fi
if [[ -z "${ETCD_BENCH:-}" ]]; then
  if [[ -x "$PEERS/etcd-bench/target/release/etcd-bench" ]]; then
    ETCD_BENCH=$PEERS/etcd-bench/target/release/etcd-bench
  else
    ETCD_BENCH=$ETCD_BENCH_TARGET/release/etcd-bench
    [[ -x "$ETCD_BENCH" ]] || CARGO_TARGET_DIR=$ETCD_BENCH_TARGET \
      cargo build --release --locked --manifest-path "$PEERS/etcd-bench/Cargo.toml"
  fi
fi

export ROOT PEERS BIN ETCD_BENCH OUT DURATION WARMUP QUICK
export CELLS=${CELLS:-"1.0:1 1.0:16 1.0:64 1.0:256 0.1:64 0.1:256"}
nodes_share=$(( $(nproc) / 3 )); [ "$nodes_share" -ge 1 ] || nodes_share=1
export SHARDCORE_CORES=${SHARDCORE_CORES:-$nodes_share} SHARDCORE_PORT=${SHARDCORE_PORT:-7201}
export BENCH_CORES=${BENCH_CORES:-1} ETCD_CONNS=${ETCD_CONNS:-}
export SHARDCORE_PREFERRED_LEADER=${SHARDCORE_PREFERRED_LEADER:-1}
exec python3 - <<'PY'
import os, re, signal, subprocess, sys, time

ROOT, PEERS, BIN, OUT = (os.environ[k] for k in ("ROOT", "PEERS", "BIN", "OUT"))
ETCD_BENCH = os.environ["ETCD_BENCH"]
DURATION, WARMUP = int(os.environ["DURATION"]), int(os.environ["WARMUP"])
CELLS = [(float(c.split(":")[0]), int(c.split(":")[1])) for c in os.environ["CELLS"].split()]
PORT, CORES = int(os.environ["SHARDCORE_PORT"]), os.environ["SHARDCORE_CORES"]
READ_INDEX = ["--read-index"] if os.environ.get("SHARDCORE_READ_INDEX", "0") == "1" else []
PEERS_DIR = os.environ.get("PEERS_DIR", "/tmp/peers")
BENCH_CORES, ETCD_CONNS = os.environ["BENCH_CORES"], os.environ["ETCD_CONNS"]
PREFERRED = os.environ["SHARDCORE_PREFERRED_LEADER"]
LIMIT = DURATION + WARMUP + 120
TICK = os.sysconf("SC_CLK_TCK")
results_file = open(os.path.join(OUT, "results.txt"), "a")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def proc_cpu(pid):
    """CPU seconds of pid (all threads), 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy():
    """(total, busy) CPU seconds of the whole machine so far."""
    with open("/proc/stat") as f:
        a = [int(x) for x in f.readline().split()[1:9]]
    return sum(a) / TICK, (sum(a) - a[3] - a[4]) / TICK


class Window:
    """CPU of the servers, of the load generator and of everything else over a window."""

    def __init__(self, servers, generator):
        self.servers, self.generator = servers, generator
        self.start = self.snap()

    def snap(self):
        return (sum(proc_cpu(p) for p in self.servers), proc_cpu(self.generator), *machine_busy())

    def close(self):
        end = self.snap()
        d = [e - s for s, e in zip(self.start, end)]
        foreign = max(0.0, d[3] - d[0] - d[1])
        return {"server_cpu": d[0], "client_cpu": d[1],
                "foreign_pct": round(100 * foreign / d[2]) if d[2] > 0 else 0}


def result_fields(line):
    return dict(t.split("=", 1) for t in line.split()[1:] if "=" in t)


def workload(put_frac):
    return "100% put" if put_frac >= 1.0 else f"{round(100 - put_frac * 100)}% get / {round(put_frac * 100)}% put"


def run_etcd_cell(put_frac, clients, pids):
    cmd = [ETCD_BENCH, "--clients", str(clients), "--mix", str(put_frac), "--duration", str(DURATION),
           "--warmup", str(WARMUP), "--compact", "--progress"]
    if ETCD_CONNS:
        cmd += ["--conns", ETCD_CONNS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    window, first_second_ops, deadline = None, 0, time.time() + LIMIT
    # The CPU window opens at the first progress tick (1 s into the measured phase), so neither
    # the connections, the prefill nor the warm-up fall into it.
    for line in proc.stderr:
        m = re.match(r"progress: t=(\d+)s ops=(\d+)", line)
        if m and m.group(1) == "1" and window is None:
            window = Window(pids, proc.pid)
            first_second_ops = int(m.group(2))
        if time.time() > deadline:
            proc.kill()
            break
    # stderr closes when the process exits; its CPU is still readable until it is reaped.
    cpu = window.close() if window else None
    out, _ = proc.communicate(timeout=60)
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    if not lines:
        log(f"etcd cell {put_frac}:{clients}: no RESULT line (exit {proc.returncode})")
        return None
    fields = result_fields(lines[-1])
    window_ops = int(fields["ops"]) - first_second_ops
    if cpu and window_ops > 0:
        fields["server_cpu_us_per_op"] = f"{cpu['server_cpu'] * 1e6 / window_ops:.1f}"
        fields["client_cpu_us_per_op"] = f"{cpu['client_cpu'] * 1e6 / window_ops:.1f}"
        fields["foreign_cpu_pct"] = str(cpu["foreign_pct"])
    extra = " ".join(f"{k}={fields[k]}" for k in ("server_cpu_us_per_op", "client_cpu_us_per_op", "foreign_cpu_pct") if k in fields)
    print(lines[-1] + " " + extra, file=results_file, flush=True)
    return fields


def run_shardcore_cell(put_frac, clients, servers, pids):
    report = os.path.join(OUT, f"shardcore-{'put' if put_frac >= 1 else 'get90'}-{clients}")
    cmd = [os.path.join(BIN, "shardcore-bench"), "--servers", servers, "--clients", str(clients),
           "--workload", "put", "--read-fraction", f"{1 - put_frac:.6f}", "--duration", str(DURATION),
           "--warmup", str(WARMUP), "--server-pids", ",".join(map(str, pids)), "--out", report, "--quiet",
           "--cores", BENCH_CORES]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    window = Window(pids, proc.pid)
    try:
        out, err = proc.communicate(timeout=LIMIT + 600)  # + a prefill of the key space
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    cpu = window.close()
    with open(report + ".log", "w") as f:
        f.write(out + err)
    lines = [l for l in out.splitlines() if l.startswith("RESULT ")]
    if not lines:
        log(f"shardcore cell {put_frac}:{clients}: no RESULT line (exit {proc.returncode}); see {report}.log")
        log(err[-2000:])
        return None
    fields = result_fields(lines[-1])
    # The bench's own window is exact; the foreign share is over the whole run (prefill included).
    fields["foreign_cpu_pct"] = str(cpu["foreign_pct"])
    print(lines[-1] + f" foreign_cpu_pct={cpu['foreign_pct']}", file=results_file, flush=True)
    return fields


def etcd_phase():
    subprocess.run([os.path.join(PEERS, "start-etcd.sh"), "--fresh"], check=True, stdout=sys.stderr)
    try:
        pids = [int(open(f"{PEERS_DIR}/etcd-{i}.pid").read()) for i in (1, 2, 3)]
        rows = {}
        for put_frac, clients in CELLS:
            log(f"etcd: {workload(put_frac)}, {clients} clients")
            rows[(put_frac, clients)] = run_etcd_cell(put_frac, clients, pids)
        return rows
    finally:
        subprocess.run([os.path.join(PEERS, "stop-etcd.sh")], stdout=sys.stderr)


def shardcore_phase():
    data = os.path.join(OUT, "shardcore-data")
    subprocess.run(["rm", "-rf", data], check=True)
    cluster = subprocess.Popen(
        [os.path.join(BIN, "shardcore"), "cluster", "local", "--base-port", str(PORT), "--data-dir", data,
         "--cores", CORES, "--log-level", "warn", "--preferred-leader", PREFERRED, *READ_INDEX],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pids, deadline = [], time.time() + 60
        for line in cluster.stdout:
            log("  " + line.rstrip())
            m = re.search(r"node \d+: .* pid (\d+)", line)
            if m:
                pids.append(int(m.group(1)))
            if line.startswith("serving") or time.time() > deadline:
                break
        if len(pids) != 3:
            raise SystemExit("shardcore cluster local did not start; see " + data)
        servers = ",".join(f"127.0.0.1:{PORT + i}" for i in range(3))
        rows = {}
        for put_frac, clients in CELLS:
            log(f"shardcore: {workload(put_frac)}, {clients} clients")
            rows[(put_frac, clients)] = run_shardcore_cell(put_frac, clients, servers, pids)
        return rows
    finally:
        cluster.send_signal(signal.SIGTERM)
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cluster.kill()
        subprocess.run(["rm", "-rf", data])


def ms(us):
    return f"{int(us) / 1000:.2f}"


def cpu(f):
    return f"{f.get('server_cpu_us_per_op', '?')} / {f.get('client_cpu_us_per_op', '?')}"


def bar(put_frac, clients, e, s):
    """Issue 6's bar for this cell: p50 <= 0.5 ms at 1 client; at 64 and 256 clients >= 10x
    etcd's ops/s and p99 below etcd's p50."""
    if not s:
        return "-"
    if clients == 1:
        return "met" if int(s["p50_us"]) <= 500 else "p50 > 0.5 ms"
    if clients not in (64, 256) or not e:
        return ""
    misses = []
    if float(s["ops_per_s"]) < 10 * float(e["ops_per_s"]):
        misses.append("< 10x ops/s")
    if int(s["p99_us"]) >= int(e["p50_us"]):
        misses.append("p99 >= etcd p50")
    return "met" if not misses else ", ".join(misses)


started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
load_before = open("/proc/loadavg").read().split()[0]
etcd = etcd_phase()
shardcore = shardcore_phase()
rows = [
    f"bench-vs-etcd: {started}, {os.cpu_count()} CPUs, load average {load_before} at start, "
    f"{DURATION} s measured + {WARMUP} s warm-up per cell; etcd's reads: ReadIndex; shardcore's: "
    + ("ReadIndex (--read-index)" if READ_INDEX else "leader lease (its default)")
    + "; connections: etcd-bench "
    + (f"{ETCD_CONNS} (--conns), requests multiplexed" if ETCD_CONNS else "one per client (its default)")
    + f"; shardcore-bench {BENCH_CORES} per node (--cores {BENCH_CORES}), requests pipelined"
    + "; leaders: etcd one (one group); shardcore "
    + (f"node {PREFERRED} leads every group (--preferred-leader {PREFERRED})" if PREFERRED != "0"
       else "where elections put them (--preferred-leader 0)"),
    "",
    "| workload | clients | etcd ops/s | etcd p50 ms | etcd p99 ms | etcd CPU µs/op (servers / bench) "
    "| shardcore ops/s | shardcore p50 ms | shardcore p99 ms | shardcore CPU µs/op (servers / bench) "
    "| ops/s ratio | server CPU/op ratio | bar (issue 6) | foreign CPU % (etcd / shardcore) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
]
for put_frac, clients in CELLS:
    e, s = etcd.get((put_frac, clients)), shardcore.get((put_frac, clients))
    cells = [workload(put_frac), str(clients)]
    for f in (e, s):
        cells += ([f"{float(f['ops_per_s']):,.0f}", ms(f["p50_us"]), ms(f["p99_us"]), cpu(f)] if f else ["-"] * 4)
    if e and s and float(e["ops_per_s"]) > 0:
        cells.append(f"{float(s['ops_per_s']) / float(e['ops_per_s']):.2f}×")
        try:
            cells.append(f"{float(s['server_cpu_us_per_op']) / float(e['server_cpu_us_per_op']):.2f}×")
        except (KeyError, ValueError, ZeroDivisionError):
            cells.append("-")
    else:
        cells += ["-", "-"]
    cells.append(bar(put_frac, clients, e, s))
    cells.append(f"{e.get('foreign_cpu_pct', '?') if e else '?'} / {s.get('foreign_cpu_pct', '?') if s else '?'}")
    rows.append("| " + " | ".join(cells) + " |")
table = "\n".join(rows)
print(table)
with open(os.path.join(OUT, "table.md"), "w") as f:
    f.write(table + "\n")
log(f"raw RESULT lines: {OUT}/results.txt; shardcore reports: {OUT}/shardcore-*/; table: {OUT}/table.md")
PY
