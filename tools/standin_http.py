"""The HTTP server the stand-ins share: threaded, loopback, and able to drop its open connections on stop.

`ThreadingHTTPServer.shutdown()` stops accepting but leaves kept-alive connections waiting for
their next request; `drop_connections()` closes them, so a stand-in stops in milliseconds
even while a client holds a connection open.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from http.server import ThreadingHTTPServer


class TrackingHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that remembers its open connections."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, *args, **kwargs):
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        """Remember the connection, then serve it in its own thread."""
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        """Forget the connection as it closes."""
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self):
        """Shut down every open connection (clients see the connection closed)."""
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ServedStandIn:
    """start(), stop() and `with` for a stand-in whose __init__ made `self._server` (a TrackingHTTPServer).

    A subclass names itself in `label`, `thread_name` and `log_name`; an `_stopping` event, if
    it has one, is set on stop so that sleeping requests wake up and end.
    """

    label = "stand-in"
    thread_name = "stand-in"
    log_name = "tools.stand_in"
    _server: TrackingHTTPServer
    _thread: threading.Thread | None = None
    base_url: str

    def start(self):
        """Serve in a daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name=f"{self.thread_name}-{self._server.server_address[1]}", daemon=True)
        self._thread.start()
        logging.getLogger(self.log_name).info("%s listening on %s", self.label, self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping requests, drop keep-alive connections, close the socket, join the thread."""
        stopping = getattr(self, "_stopping", None)
        if stopping is not None:
            stopping.set()
        if self._thread is not None:
            self._server.shutdown()
        self._server.drop_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self):
        """Start on entering a ``with`` block."""
        return self.start()

    def __exit__(self, *exc) -> None:
        """Stop on leaving a ``with`` block."""
        self.stop()


def serve_until_stopped(stand_in: ServedStandIn, *lines: str) -> int:
    """Start a stand-in, print its lines (its URL first), and serve until Ctrl+C or SIGTERM; returns 0."""

    def exit_on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, exit_on_sigterm)
    stand_in.start()
    for line in lines:
        print(line, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stand_in.stop()
        logging.getLogger(stand_in.log_name).info("stopped")
    return 0
