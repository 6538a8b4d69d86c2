"""A local HTTP server on 127.0.0.1 standing in for the official hosts in the fetch tests.

Serves ``files`` ({url path: bytes}) with HTTP Range support (206 + Content-Range), can
hang up after N bytes the first time a path is asked for (``drop_after``), can ignore
Range (``ranges = False``), and records every request line and Range header (``log``).
A request with an absolute URL (what a client sends to a proxy) is served by its path and
logged as sent, so a test can see that a proxy from the environment was used.
"""
from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlparse


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802  (http.server's naming)
        srv = self.server
        path = urlparse(self.path).path
        rng = self.headers.get("Range")
        srv.log.append((self.path, rng))
        data = srv.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and srv.ranges:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = srv.drop_after.pop(path, None)
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        self.close_connection = True  # after a cut the client sees the peer hang up

    def log_message(self, *args):
        pass


class FileServer:
    """``with FileServer({"/a.tar": b"..."}) as s: s.url("/a.tar")``; stopped on exit."""

    def __init__(self, files: Optional[Dict[str, bytes]] = None):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files = dict(files or {})
        self.httpd.drop_after = {}
        self.httpd.ranges = True
        self.httpd.log = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def files(self) -> Dict[str, bytes]:
        return self.httpd.files

    @property
    def log(self) -> List[Tuple[str, Optional[str]]]:
        return self.httpd.log

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def drop(self, path: str, after: int) -> None:
        """The next response for ``path`` ends after ``after`` body bytes."""
        self.httpd.drop_after[path] = after

    def ignore_ranges(self) -> None:
        self.httpd.ranges = False

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
