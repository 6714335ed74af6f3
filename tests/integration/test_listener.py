"""The streamer's listener on real sockets: requests that arrive together go together."""

from __future__ import annotations

import _socket
import socket

import gevent

from streamer.listener import Listener, listening_socket
from streamer.protocol import Request, response
from streamer.reply import reply_and_close
from tests.conftest import wait_until


def _listener(log: list[tuple[str, list[str]]]) -> Listener:
    def prepare(requests: list[Request]) -> None:
        log.append(("prepare", [r.path for r in requests]))

    def handler(sock: _socket.socket, request: Request) -> None:
        log.append(("handle", [request.path]))
        reply_and_close(sock, response(204, None))

    return Listener(listening_socket("127.0.0.1", 0), handler, prepare=prepare)


def _served(log: list[tuple[str, list[str]]], count: int) -> bool:
    gevent.sleep(0.01)  # run the event loop
    return sum(kind == "handle" for kind, _ in log) >= count


def test_requests_that_arrive_together_are_prepared_together_then_handled():
    log: list[tuple[str, list[str]]] = []
    listener = _listener(log)
    clients = [socket.create_connection(listener.address) for _ in range(5)]
    for n, client in enumerate(clients):
        client.sendall(f"GET /r{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        listener.start()  # one wakeup finds all five waiting
        wait_until(lambda: _served(log, 5), 5, what="five requests handled")
        paths = [f"/r{n}" for n in range(5)]
        assert log == [("prepare", paths), *(("handle", [path]) for path in paths)]
        assert all(c.recv(100).startswith(b"HTTP/1.1 204") for c in clients)
    finally:
        listener.close()
        for client in clients:
            client.close()


def test_a_late_request_is_prepared_and_handled_on_its_own():
    log: list[tuple[str, list[str]]] = []
    listener = _listener(log)
    listener.start()
    try:
        with socket.create_connection(listener.address) as client:
            wait_until(lambda: _served(log, 0) and bool(listener.pending), 5,
                       what="the connection waiting for its request")
            client.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_until(lambda: _served(log, 1), 5, what="the late request handled")
        assert log == [("prepare", ["/late"]), ("handle", ["/late"])]
    finally:
        listener.close()
