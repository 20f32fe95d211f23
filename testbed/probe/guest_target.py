"""The kernel probe target inside a VM booted with a fetched kernel (`--target kernel@VERSION`).

    python -m testbed.probe.guest_target CONTROL_DIR --listen ADDRESS --port PORT --client-to ADDRESS

Runs as the endpoint command of testbed.endpoints.vm_kernel, in the guest: the same echo server
as `python -m testbed.probe.target kernel` (it prints `listening`, which the launcher relays to
the prober), plus what the prober would otherwise do in the target's namespace from the host,
answered over files in CONTROL_DIR (the VM's state directory, shared with the host over 9p).
Every process start costs seconds in a TCG guest, so counters, the target as client and sysctls
are served from this one process; only `ip mptcp endpoint` runs a command.

    request-N.json  in:  {"op": "counters" | "setting" | "client" | "stop_clients" | "detail"}
    reply-N.json    out: {"ok": bool, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from testbed.endpoints.kernel import StopRequest
from testbed.kernel_mptcp import read_counters
from testbed.probe.target import ADD_ADDR_TIMEOUT_S, run_kernel, run_kernel_client

POLL_S = 0.02
REQUEST_PREFIX, REPLY_PREFIX = "request-", "reply-"
ENDPOINT_ID = "10"


def write_atomic(path: Path, text: str) -> None:
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


class GuestTarget:
    """What the host asks of the target between probes, answered in this process."""

    def __init__(self, announced: str, client_to: str) -> None:
        self.announced = announced
        self.client_to = client_to
        self.client_stop = threading.Event()
        self.clients: list[threading.Thread] = []

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "counters":
            return {"counters": {k: v for k, v in read_counters(os.getpid()).items()
                                 if k.startswith("MPTcpExt")}}
        if op == "setting":
            return {"problems": self.setting(str(request.get("setting", "")))}
        if op == "client":
            self.client_stop.clear()
            thread = threading.Thread(target=run_kernel_client,
                                      args=(self.client_to, int(request["port"]),
                                            float(request.get("seconds", 6)),
                                            lambda: "stop" if self.client_stop.is_set() else None),
                                      daemon=True)
            thread.start()
            self.clients.append(thread)
            return {}
        if op == "stop_clients":
            self.client_stop.set()
            for thread in self.clients:
                thread.join(timeout=3)
            self.clients.clear()
            return {}
        if op == "detail":
            return detail()
        return {"ok": False, "error": f"unknown op {op!r}"}

    def setting(self, setting: str) -> list[str]:
        """The MPTCP endpoint a probe setting needs ("" none, "announce" signal, "client" subflow)."""
        lines = ["mptcp endpoint flush"]
        if setting in ("announce", "client"):
            flag = "signal" if setting == "announce" else "subflow"
            lines.append(f"mptcp endpoint add {self.announced} id {ENDPOINT_ID} {flag}")
        done = subprocess.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n",
                              capture_output=True, text=True, check=False)
        return [line for line in done.stderr.splitlines() if line.strip()]


def detail() -> dict[str, Any]:
    sysctls = {}
    for entry in sorted(Path("/proc/sys/net/mptcp").iterdir()):
        try:
            sysctls[f"net.mptcp.{entry.name}"] = " ".join(entry.read_text().split())
        except OSError:
            continue
    limits = subprocess.run(["ip", "mptcp", "limits"], capture_output=True, text=True, check=False)
    return {"kernel_release": os.uname().release, "mptcp_sysctls": sysctls,
            "mptcp_limits": limits.stdout.strip()}


def serve(control: Path, target: GuestTarget, stop: StopRequest) -> None:
    """Answer request files until stopped; each reply is written before its request is removed."""
    while not stop():
        for request_path in sorted(control.glob(REQUEST_PREFIX + "*.json")):
            number = request_path.name[len(REQUEST_PREFIX):-len(".json")]
            try:
                request = json.loads(request_path.read_text())
                reply = {"ok": True, **target.handle(request)}
            except Exception as exc:  # a bad request is answered, never the end of the target
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            write_atomic(control / f"{REPLY_PREFIX}{number}.json", json.dumps(reply))
            request_path.unlink(missing_ok=True)
        time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.probe.guest_target")
    parser.add_argument("control", type=Path)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--announced", required=True)
    parser.add_argument("--client-to", required=True)
    args = parser.parse_args(argv)
    stop = StopRequest()
    stop.install()
    # the probes wait for a retransmitted ADD_ADDR (Linux's default is 120 s); a guest kernel
    # without the sysctl is reported by the host's detail, not fatal here
    timeout = Path("/proc/sys/net/mptcp/add_addr_timeout")
    if timeout.exists():
        timeout.write_text(f"{int(ADD_ADDR_TIMEOUT_S)}\n")
    args.control.mkdir(parents=True, exist_ok=True)
    server = threading.Thread(target=run_kernel, args=(args.listen, args.port, stop), daemon=True)
    server.start()  # prints `listening` once bound
    serve(args.control, GuestTarget(args.announced, args.client_to), stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
