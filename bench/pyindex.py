"""A package index on loopback that answers as PyPI does, for bench/cache.sh.

    python3 bench/pyindex.py WHEEL_DIR PORT RATE

Serves the wheels in WHEEL_DIR as a PEP 503 simple index at
http://127.0.0.1:PORT/simple/, with PyPI's cache headers (files
`max-age=365000000, immutable`, index pages `max-age=600`), so that pip's
HTTP cache works as it does against pypi.org. Files are sent at RATE
bytes per second (0: as fast as loopback goes), the cost of a download
over a real network. Counts the files it sends: GET /stats says how many.
"""

import hashlib
import html
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WHEELS, PORT, RATE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
CHUNK = 64 * 1024
sent = {"files": 0, "bytes": 0}
lock = threading.Lock()


def normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def projects():
    found = {}
    for file in sorted(os.listdir(WHEELS)):
        if file.endswith((".whl", ".tar.gz")):
            found.setdefault(normalise(file.split("-")[0]), []).append(file)
    return found


class Index(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, body, kind, cache):
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/stats":
            with lock:
                return self.answer(f"{sent['files']} {sent['bytes']}\n".encode(), "text/plain", "no-store")
        if path.startswith("/simple/"):
            name = normalise(path[len("/simple/"):].strip("/"))
            files = projects().get(name)
            if files is None:
                self.send_error(404)
                return
            links = []
            for file in files:
                with open(os.path.join(WHEELS, file), "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                links.append(f'<a href="/files/{html.escape(file)}#sha256={digest}">{html.escape(file)}</a><br>')
            body = ("<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>").encode()
            return self.answer(body, "text/html", "max-age=600, public")
        if path.startswith("/files/"):
            file = os.path.basename(path)
            full = os.path.join(WHEELS, file)
            if not os.path.isfile(full):
                self.send_error(404)
                return
            size = os.path.getsize(full)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "max-age=365000000, immutable, public")
            self.end_headers()
            with open(full, "rb") as f:
                start = time.monotonic()
                done = 0
                while chunk := f.read(CHUNK):
                    self.wfile.write(chunk)
                    done += len(chunk)
                    if RATE:
                        ahead = done / RATE - (time.monotonic() - start)
                        if ahead > 0:
                            time.sleep(ahead)
            with lock:
                sent["files"] += 1
                sent["bytes"] += size
            return
        self.send_error(404)


ThreadingHTTPServer(("127.0.0.1", PORT), Index).serve_forever()
