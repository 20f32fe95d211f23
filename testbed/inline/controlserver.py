"""The Unix-socket end of the control protocol, polled by the inline process's event loop.

Non-blocking accept and receive, so a slow or stuck client can never stall forwarding; replies
are small (a stats object) and are written with a short timeout. The socket file is created
last during start-up, so its appearance means the process is forwarding, and it is removed on
every exit path (`close`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from typing import Any

from testbed.inline.commands import Controllable, handle_line

MAX_REQUEST_BYTES = 64 * 1024
REPLY_TIMEOUT_S = 1.0


class ControlServer:
    def __init__(self, path: str, target: Controllable) -> None:
        self.path = path
        self._target = target
        self._remove_stale(path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(path)
            self._listener.listen(8)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self._clients: dict[socket.socket, bytearray] = {}

    @staticmethod
    def _remove_stale(path: str) -> None:
        """Remove a socket file left by a dead process; refuse to replace anything else."""
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise FileExistsError(f"control path {path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)
            return
        finally:
            probe.close()
        raise FileExistsError(f"control socket {path} is in use by another running process")

    def sockets(self) -> list[socket.socket]:
        return [self._listener, *self._clients]

    def on_readable(self, ready: socket.socket) -> None:
        """Accept a client, or read a client's requests and answer each complete line."""
        if ready is self._listener:
            with contextlib.suppress(BlockingIOError):
                client, _ = self._listener.accept()
                client.setblocking(False)
                self._clients[client] = bytearray()
            return
        buffer = self._clients.get(ready)
        if buffer is None:
            return
        try:
            data = ready.recv(MAX_REQUEST_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(ready)
            return
        buffer += data
        while b"\n" in buffer:
            line, _, rest = bytes(buffer).partition(b"\n")
            buffer[:] = rest
            if line.strip():
                self._reply(ready, handle_line(line, self._target))
        if len(buffer) > MAX_REQUEST_BYTES:
            self._reply(ready, {"ok": False, "error": f"request longer than "
                                                     f"{MAX_REQUEST_BYTES} bytes"})
            self._drop(ready)

    def _reply(self, client: socket.socket, response: dict[str, Any]) -> None:
        try:
            client.settimeout(REPLY_TIMEOUT_S)
            client.sendall(json.dumps(response).encode() + b"\n")
            client.setblocking(False)
        except OSError:
            self._drop(client)

    def _drop(self, client: socket.socket) -> None:
        self._clients.pop(client, None)
        client.close()

    def close(self) -> None:
        for client in list(self._clients):
            self._drop(client)
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
