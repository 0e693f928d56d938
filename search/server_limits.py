"""Connection limits and hardening of `recipekit serve` (used by :mod:`recipekit.search.server`).

The default limits (upload size, listen backlog, workers, idle and request timeouts, open
connections), the security headers every answer carries, the Host-header check against DNS
rebinding (:func:`host_allowed`), and the waiting room (:class:`_Waiting`) that holds
connections until their request headers have arrived, so slow or idle clients hold no worker.
"""

from __future__ import annotations

import ipaddress
import json
import selectors
import socket
import threading
import time
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from .server import RecipeServer

__all__ = ["DEFAULT_BACKLOG", "DEFAULT_IDLE_TIMEOUT", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_UPLOAD",
           "DEFAULT_REQUEST_TIMEOUT", "DEFAULT_THREADS", "MAX_HEADER_BYTES", "SECURITY_HEADERS", "host_allowed"]

DEFAULT_MAX_UPLOAD = 8 * 2**20  # bytes of one photo upload
DEFAULT_BACKLOG = 1024  # listen queue (Python's default of 5 overflows under a burst of clients)
DEFAULT_THREADS = 16  # workers answering requests (queries themselves run one at a time)
DEFAULT_IDLE_TIMEOUT = 15.0  # seconds a connection may wait without sending a request
DEFAULT_REQUEST_TIMEOUT = 30.0  # seconds a request (headers, then body) may take to arrive
DEFAULT_MAX_CONNECTIONS = 1000  # open connections at once; more get 503
MAX_HEADER_BYTES = 65536
# The page loads only its own script, style and photos; nothing may frame it.
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                                "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


class _Waiting:
    """Connections with no complete request yet, watched by one thread with a selector: a
    connection goes to a worker when its request headers are all there (peeked, not read),
    is closed when idle too long, and gets 408 when its request trickles in too slowly."""

    RECHECK_S = 0.05  # a connection with part of its headers is looked at again this much later

    def __init__(self, server: RecipeServer):
        self.server = server
        self.selector = selectors.DefaultSelector()
        self.incoming: deque = deque()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="recipekit-serve-waiting", daemon=True)
        self.thread.start()

    def add(self, sock, address) -> None:
        self.incoming.append((sock, address))
        try:
            self.wake_w.send(b"\0")
        except OSError:
            pass

    def stop(self) -> None:
        self.stopped = True
        try:
            self.wake_w.send(b"\0")
        except OSError:
            pass
        self.thread.join(timeout=5)

    def _run(self) -> None:
        server = self.server
        # sock -> [address, idle since, first byte of a partial request (or None), recheck at (or None)]
        state: dict = {}
        try:
            while not self.stopped:
                now = time.monotonic()
                while self.incoming:
                    sock, address = self.incoming.popleft()
                    sock.setblocking(False)
                    state[sock] = [address, now, None, None]
                    self.selector.register(sock, selectors.EVENT_READ, None)
                for key, _ in self.selector.select(timeout=self.RECHECK_S):
                    sock = key.fileobj
                    if sock is self.wake_r:
                        try:
                            while self.wake_r.recv(4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                        continue
                    entry = state[sock]
                    try:
                        head = sock.recv(MAX_HEADER_BYTES, socket.MSG_PEEK)
                    except BlockingIOError:
                        continue
                    except OSError:
                        head = b""
                    self.selector.unregister(sock)
                    if not head:  # the client closed it
                        del state[sock]
                        server._close(sock)
                    elif b"\r\n\r\n" in head or b"\n\n" in head or len(head) >= MAX_HEADER_BYTES:
                        del state[sock]
                        try:
                            server.pool.submit(server._serve_one, sock, entry[0])
                        except RuntimeError:  # shutting down
                            server._close(sock)
                    else:  # part of a request: look again a little later, not in a busy loop
                        entry[2] = entry[2] or time.monotonic()
                        entry[3] = time.monotonic() + self.RECHECK_S
                now = time.monotonic()
                for sock, entry in list(state.items()):
                    address, since, first, recheck = entry
                    if first is not None and now - first > server.request_timeout:
                        self._drop(sock, state, 408, "request timeout: the request did not arrive in "
                                                     f"{server.request_timeout:g} s")
                    elif first is None and now - since > server.idle_timeout:
                        self._drop(sock, state)
                    elif recheck is not None and now >= recheck:
                        entry[3] = None
                        self.selector.register(sock, selectors.EVENT_READ, None)
        finally:
            for sock in list(state):
                self._drop(sock, state)
            self.selector.close()
            self.wake_r.close()
            self.wake_w.close()

    def _drop(self, sock, state: dict, status: int | None = None, message: str = "") -> None:
        entry = state.pop(sock)
        if entry[3] is None:
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
        if status is not None:
            _raw_answer(sock, status, message)
        self.server._close(sock)


def _raw_answer(sock, status: int, message: str) -> None:
    """A whole JSON error answer written straight to a socket (no worker involved), then close."""
    body = json.dumps({"error": message}).encode("utf-8")
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n" + "".join(f"{k}: {v}\r\n" for k, v in SECURITY_HEADERS)
            + "\r\n").encode("latin-1")
    try:
        sock.setblocking(True)
        sock.settimeout(1.0)
        sock.sendall(head + body)
    except OSError:
        pass


def _allowed_hosts(bound: str, extra: Iterable[str]) -> frozenset[str]:
    names = {"localhost", "localhost.localdomain", *(h.strip().lower().rstrip(".") for h in extra if h.strip())}
    if bound and bound not in ("0.0.0.0", "::"):
        names.add(bound.lower())
    return frozenset(names)


def host_allowed(host_header: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's Host header names this server: an IP address (a DNS-rebinding page
    reaches the server under a host *name* of the attacker's), ``localhost``, the bound name
    or one of ``allowed`` (``*`` allows any)."""
    if "*" in allowed:
        return True
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host in allowed
