#!/usr/bin/env python3
"""Helper for bench/switch.sh: the keep-alive clients' results, per switch.

    keepalive_report.py LABEL=RESULTS... --switches "release v2,release v3,release v4"

RESULTS is what `graven-loadgen keepalive` wrote: one line per request,
client, sent and answered (µs since the epoch), status, body. Each switch
is named by the body its new release answers with. For each switch, the
moment it happened is the first answer from the new release; from then on:

  stale    requests sent more than 1 ms after the switch and answered by an
           older release (per-request routing makes this 0);
  next     for each client, from the switch to its first answer from the new
           release: the max and the p99 over the clients (the clients send
           every INTERVAL ms, so this includes up to one interval of waiting
           to send);
  failed   requests with no answer or not 200, over the whole run.
"""
import sys


def load(path):
    rows = []
    with open(path) as results:
        for line in results:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4:
                continue
            client, sent, answered, status = (int(p) for p in parts[:4])
            rows.append((client, sent, answered, status, parts[4] if len(parts) > 4 else ""))
    return rows


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def report(label, rows, switches):
    failed = sum(1 for r in rows if r[3] != 200)
    print(f"{label}: {len(rows)} requests, {len({r[0] for r in rows})} clients, {failed} failed")
    bodies = [s.strip() for s in switches]
    for index, body in enumerate(bodies):
        answered_new = [r for r in rows if r[3] == 200 and r[4] == body]
        if not answered_new:
            print(f"  {body}: never answered")
            continue
        at = min(r[2] for r in answered_new)
        until = min((r[2] for r in rows if r[3] == 200 and index + 1 < len(bodies) and r[4] == bodies[index + 1]),
                    default=float("inf"))
        older = set(bodies[:index]) | {b for b in {r[4] for r in rows} if b not in bodies}
        stale = sum(1 for r in rows if at + 1000 < r[1] < until and r[3] == 200 and r[4] in older)
        first = {}
        for r in answered_new:
            if r[0] not in first or r[2] < first[r[0]]:
                first[r[0]] = r[2]
        delays = [(t - at) / 1000 for t in first.values()]
        clients = len({r[0] for r in rows if r[1] > at})
        print(f"  {body}: stale {stale}, next answer from it: p99 {quantile(delays, 0.99):.1f} ms, "
              f"max {max(delays):.1f} ms over {len(first)} of {clients} clients")


def main():
    args = sys.argv[1:]
    if "--switches" not in args:
        sys.exit("usage: keepalive_report.py LABEL=RESULTS... --switches BODY,BODY,...")
    i = args.index("--switches")
    switches = args[i + 1].split(",")
    for spec in args[:i] + args[i + 2:]:
        label, _, path = spec.partition("=")
        report(label, load(path), switches)


if __name__ == "__main__":
    main()
