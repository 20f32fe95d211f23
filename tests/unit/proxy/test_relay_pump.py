"""The relay's copy loop on socket pairs: bytes unchanged, half-close passed on, errors seen."""

from __future__ import annotations

import os
import socket
import threading

from testbed.proxy.relay_kernel import Counts, pump


def test_pump_copies_every_byte_and_passes_the_end_of_stream_on_as_a_half_close() -> None:
    client_app, client_side = socket.socketpair()
    server_side, server_app = socket.socketpair()
    payload = os.urandom(3_000_000)
    counts = Counts()
    done: list[bool] = []
    thread = threading.Thread(
        target=lambda: done.append(pump(client_side, server_side, counts, "bytes_to_server")))
    thread.start()
    sender = threading.Thread(
        target=lambda: (client_app.sendall(payload), client_app.shutdown(socket.SHUT_WR)))
    sender.start()
    received = bytearray()
    while data := server_app.recv(65536):
        received += data
    sender.join()
    thread.join()
    assert bytes(received) == payload
    assert done == [True] and counts.values["bytes_to_server"] == len(payload)
    # a half-close, not a close: the server side can still answer after the end of stream
    server_app.sendall(b"verdict")
    assert server_side.recv(16) == b"verdict"
    for sock in (client_app, client_side, server_side, server_app):
        sock.close()


def test_pump_reports_a_sink_that_fails() -> None:
    client_app, client_side = socket.socketpair()
    server_side, server_app = socket.socketpair()
    server_app.close()
    server_side.close()  # sending on a closed socket fails
    client_app.sendall(b"x" * 1000)
    client_app.shutdown(socket.SHUT_WR)
    assert pump(client_side, server_side, Counts(), "bytes_to_server") is False
    client_app.close()
    client_side.close()
