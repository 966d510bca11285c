"""A real TCP relay on 127.0.0.1 in front of a server, that records the bytes each way and can cut every connection.

For tests of what a client does when its connection drops mid-answer (a proxy restart,
a network blip): the client and the server are the real ones; only the wire in between
is broken, on purpose, by :meth:`TcpRelay.cut`. ``tests/`` is on ``sys.path``, so test
modules import this as ``from tcp_relay import TcpRelay``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

__all__ = ["TcpRelay"]


class TcpRelay:
    """Relay connections from a free port on 127.0.0.1 to ``127.0.0.1:target_port``.

    Attributes:
        url: ``http://127.0.0.1:<port>`` of the relay.
        sent: per accepted connection, the bytes the client sent (requests), in order.
        received: per accepted connection, the bytes the server answered (each chunk recorded
            once it was passed on to the client, so a test that sees it may :meth:`cut` knowing
            the client was sent it).
    """

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.sent: list[bytearray] = []
        self.received: list[bytearray] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target_port))
            except OSError:  # the server is gone: the client sees its connection closed
                client.close()
                continue
            with self._lock:
                sent, received = bytearray(), bytearray()
                self.sent.append(sent)
                self.received.append(received)
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, sent), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, received), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bytearray) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
                with self._lock:  # recorded once passed on: what a test sees recorded, the far side was sent
                    record += chunk
        except OSError:
            pass
        finally:
            self._shut(sink)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def requests_with(self, text: str) -> list[str]:
        """The requests (as text) of the connections so far whose bytes contain ``text`` (case-insensitive)."""
        with self._lock:
            return [bytes(item).decode("latin-1") for item in self.sent if text.lower().encode() in bytes(item).lower()]

    def answered(self, index: int) -> bytes:
        """What the server sent so far on connection ``index`` that the relay has passed on to the client."""
        with self._lock:
            return bytes(self.received[index])

    def cut(self) -> None:
        """Break every open connection at once (both sides see the connection reset or closed); new ones are still relayed."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            self._shut(sock)
            sock.close()

    def close(self) -> None:
        """Stop accepting and break every connection."""
        self._listener.close()
        self.cut()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
