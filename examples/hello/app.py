"""The web process: `python3 app.py`, serving on 0.0.0.0:$PORT.

GET /healthz  -> "ok" (graven's health check, see graven.toml)
GET /         -> HTML page; plain text for ?format=text or Accept: text/plain
"""
import os
import signal
import string
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from html import escape

import buildinfo

INFO = buildinfo.load()
# Config is read once: a release's environment never changes under a running process.
GREETING = os.environ.get("GREETING") or "Hello"
RELEASE = buildinfo.release()
PROCESS = buildinfo.process("web")
with open(os.path.join(buildinfo.STATIC, "index.html"), encoding="utf-8") as f:
    PAGE = string.Template(f.read()).substitute(
        greeting=escape(GREETING), release=escape(RELEASE), process=escape(PROCESS))
TEXT = (f"{GREETING} from {INFO['app']} {RELEASE} "
        f"(commit {INFO['commit_short']}, {PROCESS})\n")


class Handler(BaseHTTPRequestHandler):
    # Bounds how long an idle connection can delay shutdown.
    timeout = 5

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self.reply(200, "text/plain", "ok\n")
        elif url.path == "/":
            accept = self.headers.get("Accept", "")
            wants_text = (parse_qs(url.query).get("format") == ["text"]
                          or ("text/plain" in accept and "text/html" not in accept))
            if wants_text:
                self.reply(200, "text/plain", TEXT)
            else:
                self.reply(200, "text/html", PAGE)
        else:
            self.reply(404, "text/plain", "not found\n")

    def reply(self, status, ctype, body):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Vary", "Accept")
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code="-", size="-"):
        # Logs are an event stream on stdout (twelve-factor); the supervisor
        # adds timestamps, so don't. Flush so lines aren't stuck in a buffer.
        print(f"{PROCESS} {self.client_address[0]} \"{self.requestline}\" {code}",
              flush=True)


class Server(ThreadingHTTPServer):
    # Non-daemon request threads that server_close() joins: in-flight
    # requests finish before the process exits.
    daemon_threads = False
    block_on_close = True
    # socketserver listens with a backlog of 5: a burst of connections had
    # most of its handshakes dropped, each tried again a second later.
    request_queue_size = 128


def main():
    port = int(os.environ.get("PORT") or 5000)
    server = Server(("0.0.0.0", port), Handler)

    def stop(signum, frame):
        # shutdown() blocks until serve_forever() returns, and serve_forever()
        # runs in this (the main) thread, so call it from another thread.
        print(f"{PROCESS} got {signal.Signals(signum).name}, shutting down", flush=True)
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{PROCESS} {INFO['app']} {RELEASE} (commit {INFO['commit_short']}) "
          f"listening on 0.0.0.0:{port}", flush=True)
    server.serve_forever(poll_interval=0.2)  # how quickly shutdown() is noticed
    server.server_close()
    print(f"{PROCESS} stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
