#!/usr/bin/env python3
"""Side by side, alternating, on the same PostgreSQL: pgledger (one transfer per call, 8 pgbench clients) vs
`escrow-ledger bench append --writers 8` vs `escrow-ledger bench callbacks --senders 64`, each on a fresh
database, with throughput and machine CPU per operation (from /proc/stat over the timed part only), and the
share spent in PostgreSQL (escrow-ledger's benches measure their pooled backends; for pgbench, whose backends
end with it, it is the machine's busy time less pgbench's own).

    scripts/compare-pgledger.py PGLEDGER_DIR [--rounds 2] [--binary target/release/escrow-ledger]
        [--host 127.0.0.1] [--user postgres] [--seconds 20]

PGLEDGER_DIR holds pgledger's setup.sh and transfer.sql (github.com/pgr0ss/pgledger; it is not part of this
project). Linux only (reads /proc). Heavy: minutes of full load; run it on a quiet machine, not in CI.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def busy_ticks():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: idle and iowait are not busy
    return sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields))


def psql(args, db, *sql):
    cmd = ["psql", "-X", "-q", "-h", args.host, "-U", args.user, "-d", db]
    for s in sql:
        cmd += ["-c", s]
    subprocess.run(cmd, check=True)


def fresh_db(args, name):
    psql(args, "postgres", f"drop database if exists {name} with (force)", f"create database {name}")
    return f"postgres://{args.user}@{args.host}:5432/{name}"


def pgledger(args):
    db = "compare_pgledger"
    subprocess.run([os.path.join(args.pgledger, "setup.sh"), db, "50", "-h", args.host, "-U", args.user],
                   check=True)
    # pgbench's backends start and end inside the timed part, so /proc cannot see their CPU afterwards: the
    # PostgreSQL share is the machine's busy time less pgbench's own (its rusage as a child).
    before = (busy_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN))
    out = subprocess.run(["pgbench", "-n", "-c", "8", "-j", "2", "-T", str(args.seconds), "-D", "naccts=50",
                          "-f", os.path.join(args.pgledger, "transfer.sql"), "-h", args.host, "-U", args.user, db],
                         check=True, capture_output=True, text=True).stdout
    after = (busy_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN))
    client = (after[1].ru_utime + after[1].ru_stime) - (before[1].ru_utime + before[1].ru_stime)
    done = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    machine = (after[0] - before[0]) / TICKS
    psql(args, "postgres", f"drop database if exists {db} with (force)")
    return {"what": "pgledger transfer (8 clients)", "per_s": tps, "cpu_ms": machine * 1000 / done,
            "pg_share": max(machine - client, 0.0) / machine if machine else 0.0, "p99_ms": None}


def escrow(args, kind, extra, per_s, cpu, label):
    url = fresh_db(args, "compare_escrow")
    subprocess.run([args.binary, "--database-url", url, "db", "migrate"], check=True, capture_output=True)
    out = subprocess.run([args.binary, "--database-url", url, "bench", kind, *extra, "--json"],
                         check=True, capture_output=True, text=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    psql(args, "postgres", "drop database if exists compare_escrow with (force)")
    return {"what": label, "per_s": report[per_s], "cpu_ms": report[cpu],
            "pg_share": report["cpu_postgres_share"], "p99_ms": report["p99_ms"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pgledger")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--binary", default="target/release/escrow-ledger")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--user", default="postgres")
    p.add_argument("--seconds", type=int, default=20)
    args = p.parse_args()
    if not os.path.exists(os.path.join(args.pgledger, "transfer.sql")):
        sys.exit(f"{args.pgledger} holds no transfer.sql: give pgledger's directory")
    rows = []
    for r in range(1, args.rounds + 1):
        for run in (
            lambda: pgledger(args),
            lambda: escrow(args, "append", ["--writers", "8"], "commands_per_s", "cpu_ms_per_command",
                           "escrow-ledger bench append --writers 8"),
            lambda: escrow(args, "callbacks", ["--senders", "64", "--payments", "8000"], "callbacks_per_second",
                           "cpu_ms_per_callback", "escrow-ledger bench callbacks --senders 64"),
        ):
            row = run()
            row["round"] = r
            row["at"] = time.strftime("%H:%M:%S")
            rows.append(row)
            p99 = "" if row["p99_ms"] is None else f", p99 {row['p99_ms']:.0f} ms"
            print(f"round {r} {row['at']} {row['what']}: {row['per_s']:,.0f}/s, {row['cpu_ms']:.3f} ms CPU per "
                  f"operation ({row['pg_share'] * 100:.0f}% in PostgreSQL){p99}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
