"""The worker process: `python3 worker.py`. Stands in for a background job
runner: prints a heartbeat every 5 s until told to stop.
"""
import signal
import sys
import threading

import buildinfo

INTERVAL = 5  # seconds between heartbeats


def main():
    info = buildinfo.load()
    release = buildinfo.release()
    name = buildinfo.process("worker")
    # An Event rather than time.sleep(), so SIGTERM ends the wait at once.
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())

    beat = 0
    while not stopping.is_set():
        beat += 1
        print(f"{name} heartbeat {beat}: {info['app']} {release} "
              f"(commit {info['commit_short']})", flush=True)
        stopping.wait(INTERVAL)
    print(f"{name} stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
