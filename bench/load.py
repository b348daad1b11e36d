#!/usr/bin/env python3
"""Helper for bench/switch.sh: a bounded HTTP load on loopback, and its report.

Subcommands (all traffic goes to 127.0.0.1 only):

  run      --port P --duration S --connections N --out FILE [--t0-file FILE]
           N threads each send `GET /?format=text` over a fresh TCP connection
           (HTTP/1.0, Connection: close), one after another, for S seconds
           (and at most --max-requests in all). Every request's start and end
           time, HTTP status (0 = no response), error and body are written to
           FILE as JSON. The start time (Unix epoch seconds) is written to
           --t0-file as soon as the load begins, so the caller can schedule
           its switches relative to it.
  wait     --port P --marker TEXT [--timeout S]
           Poll until `GET /?format=text` answers 200 with TEXT in its body.
  appstart --dir D [--runs N]
           The app's own start time: spawn `python3 app.py` in D (a built
           checkout) on a free loopback port, time until /healthz answers 200,
           stop it; print the median of N runs in milliseconds.
  report   --app-start MS LABEL=DIR...
           Each DIR holds a `run` result (results.json) and actions.tsv (one
           line per switch: name, start epoch, end epoch, marker). Prints the
           side-by-side table.

Standard library only, so the benchmark needs nothing but python3.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"  # loopback only, always
REQUEST = b"GET /?format=text HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def get(port, path="/?format=text", timeout=5.0):
    """One request on a fresh connection. Returns (status, body, error)."""
    request = REQUEST if path == "/?format=text" else (
        f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(request)
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except OSError as e:
        return 0, "", type(e).__name__ + (f" ({e.errno})" if e.errno else "")
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return 0, "", "incomplete response" if raw else "empty response"
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, "", "bad status line"
    return status, body.decode("utf-8", "replace").strip(), ""


# ---------------------------------------------------------------- run

def cmd_run(args):
    bodies = {}          # body text -> index, so results.json stays small
    records = []         # (start, end, status, body index, error)
    lock = threading.Lock()
    count = [0]
    t0 = time.time()
    deadline = t0 + args.duration
    if args.t0_file:
        tmp = args.t0_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{t0:.6f}\n")
        os.replace(tmp, args.t0_file)

    def worker():
        mine = []
        while True:
            start = time.time()
            if start >= deadline:
                break
            with lock:
                if count[0] >= args.max_requests:
                    break
                count[0] += 1
            status, body, error = get(args.port)
            end = time.time()
            with lock:
                index = bodies.setdefault(body, len(bodies))
            mine.append((round(start - t0, 6), round(end - t0, 6), status, index, error))
            if status == 0:
                # A refused connection returns at once; don't spin a core on it.
                time.sleep(0.001)
        with lock:
            records.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records.sort()
    with open(args.out, "w") as f:
        json.dump({"t0": t0, "duration": args.duration, "connections": args.connections,
                   "bodies": sorted(bodies, key=bodies.get), "requests": records}, f)
    print(f"load: {len(records)} requests in {args.duration} s "
          f"over {args.connections} connections", file=sys.stderr)


# ---------------------------------------------------------------- wait

def cmd_wait(args):
    deadline = time.time() + args.timeout
    last = ""
    while time.time() < deadline:
        status, body, error = get(args.port, timeout=2)
        if status == 200 and args.marker in body:
            print(body)
            return 0
        last = error or f"{status} {body[:80]!r}"
        time.sleep(0.05)
    print(f"load.py wait: port {args.port} did not answer with {args.marker!r} "
          f"within {args.timeout} s (last: {last})", file=sys.stderr)
    return 1


# ---------------------------------------------------------------- appstart

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cmd_appstart(args):
    times = []
    for _ in range(args.runs):
        port = free_port()
        env = dict(os.environ, PORT=str(port))
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=args.dir, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                if proc.poll() is not None:
                    print(f"load.py appstart: app.py exited with {proc.returncode}",
                          file=sys.stderr)
                    return 1
                if get(port, "/healthz", timeout=1)[0] == 200:
                    break
                if time.perf_counter() - start > 30:
                    print("load.py appstart: app did not answer within 30 s", file=sys.stderr)
                    return 1
                time.sleep(0.002)
            times.append((time.perf_counter() - start) * 1000)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(f"{statistics.median(times):.0f}")
    return 0


# ---------------------------------------------------------------- report

def longest_gap(ends, start, stop):
    """The longest wait between successful responses completing in [start,
    stop), counting from start and to stop. Returns (seconds, from when)."""
    ends = [start] + [e for e in ends if start <= e < stop] + [stop]
    return max((b - a, a) for a, b in zip(ends, ends[1:]))


def analyse(directory):
    with open(os.path.join(directory, "results.json")) as f:
        res = json.load(f)
    t0, duration, bodies, reqs = res["t0"], res["duration"], res["bodies"], res["requests"]
    actions = []
    with open(os.path.join(directory, "actions.tsv")) as f:
        for line in f:
            name, start, end, marker = line.rstrip("\n").split("\t")
            actions.append((name, float(start) - t0, float(end) - t0, marker))

    ok = [r for r in reqs if r[2] == 200]
    failed = [r for r in reqs if r[2] != 200]
    ends = sorted(r[1] for r in ok)
    # Over the load window only: requests in flight at its end finish after it.
    gap, gap_at = longest_gap(ends, 0.0, duration)
    latency = sorted(r[1] - r[0] for r in ok) or [0.0]
    out = {"requests": len(reqs), "ok": len(ok), "failed": len(failed),
           "rate": len(reqs) / duration, "duration": duration, "gap": gap, "gap_at": gap_at,
           "p50": latency[len(latency) // 2], "p99": latency[int(len(latency) * 0.99)],
           "max": latency[-1], "errors": {}, "switches": []}
    for r in failed:
        key = r[4] or f"HTTP {r[2]}"
        out["errors"][key] = out["errors"].get(key, 0) + 1
    # Each switch's window runs from its start to the next switch's start
    # (the last one's to the end of the load).
    bounds = [a[1] for a in actions[1:]] + [duration]
    for (name, start, end, marker), until in zip(actions, bounds):
        first = min((r[1] for r in ok if r[1] >= end and marker in bodies[r[3]]), default=None)
        out["switches"].append({
            "name": name, "at": start, "took": end - start,
            "failed": sum(1 for r in reqs if start <= r[0] < until and r[2] != 200),
            "gap": longest_gap(ends, start, until)[0],
            # From the command returning to the first response of the new release.
            "serving": None if first is None else first - end,
            "marker": marker})
    return out


def ms(v):
    return "never" if v is None else f"{v * 1000:.0f} ms"


def cmd_report(args):
    labels, stats = [], []
    for item in args.runs:
        label, _, directory = item.partition("=")
        labels.append(label)
        stats.append(analyse(directory))
    width = 52
    col = max(20, *(len(l) + 2 for l in labels))
    lines = []

    def row(name, values):
        lines.append(f"  {name:<{width}}" + "".join(f"{v:>{col}}" for v in values))

    switches = stats[0]["switches"]
    row("", labels)
    row("requests", [f"{s['requests']} ({s['rate']:.0f}/s)" for s in stats])
    row("failed requests (connection error or non-200)", [str(s["failed"]) for s in stats])
    # Each switch's window: from it to the next switch (or the end of the load).
    windows = [f"{sw['name']} window (t≈{sw['at']:.0f}-{nxt:.0f} s)" for sw, nxt in
               zip(switches, [sw["at"] for sw in switches[1:]] + [stats[0]["duration"]])]
    for i, name in enumerate(windows):
        row(f"  in the {name}", [str(s["switches"][i]["failed"]) for s in stats])
    row("longest gap between successful responses",
        [f"{ms(s['gap'])} @{s['gap_at']:.1f}s" for s in stats])
    for i, name in enumerate(windows):
        row(f"  in the {name}", [ms(s["switches"][i]["gap"]) for s in stats])
    for i, sw in enumerate(switches):
        row(f"{sw['name']} command took", [ms(s["switches"][i]["took"]) for s in stats])
        row(f"  returned -> first '{sw['marker']}'",
            [ms(s["switches"][i]["serving"]) for s in stats])
    row("response time p50 / p99 / max (successful)",
        [f"{s['p50'] * 1000:.0f}/{s['p99'] * 1000:.0f}/{s['max'] * 1000:.0f} ms" for s in stats])
    row("app's own start time (python3 app.py -> /healthz)", [f"{args.app_start:.0f} ms"] * len(stats))
    print("\n".join(lines))
    for label, s in zip(labels, stats):
        if s["errors"]:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(s["errors"].items()))
            print(f"  {label} failures: {kinds}")
    print("  (a refused connection fails at once and the client tries again, so the count of\n"
          "   failures scales with the client's speed; the gaps are the time without service)")
    # The targets, for graven (the first column).
    g = stats[0]
    rollback = g["switches"][-1]["serving"]
    limit = 1.0 + args.app_start / 1000
    print(f"  target ({labels[0]}): zero failed requests across all three switches: "
          f"{'met' if g['failed'] == 0 else 'NOT met'} ({g['failed']} failed)")
    print(f"  target ({labels[0]}): rollback serving within 1 s + the app's start time "
          f"({ms(limit)}): {'met' if rollback is not None and rollback < limit else 'NOT met'} "
          f"({ms(rollback)})")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--duration", type=float, default=20)
    r.add_argument("--connections", type=int, default=8)
    r.add_argument("--max-requests", type=int, default=1_000_000)
    r.add_argument("--out", required=True)
    r.add_argument("--t0-file")
    w = sub.add_parser("wait")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--marker", default="")
    w.add_argument("--timeout", type=float, default=60)
    a = sub.add_parser("appstart")
    a.add_argument("--dir", required=True)
    a.add_argument("--runs", type=int, default=5)
    rep = sub.add_parser("report")
    rep.add_argument("--app-start", type=float, required=True)
    rep.add_argument("runs", nargs="+", metavar="LABEL=DIR")
    args = p.parse_args()
    return {"run": cmd_run, "wait": cmd_wait, "appstart": cmd_appstart,
            "report": cmd_report}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
