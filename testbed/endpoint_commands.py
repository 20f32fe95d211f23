"""How each endpoint program is started: its command line, for every stack and role.

One contract for all stacks (testbed.endpoints): the runner, the soak and the demos build the
same lines here; a VM endpoint wraps one in testbed.endpoints.vm_kernel's launcher.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from testbed.endpoints import ENDPOINT_MODULES
from testbed.endpoints.report import ReportError, parse_output
from testbed.spec import ExperimentSpec


def python_stack_options(role: str, spec: ExperimentSpec, addresses: list[str]) -> list[str]:
    """The spec's [mptcp] settings for a python endpoint, which has no `ip mptcp` to read them
    from: checksum, which local addresses open subflows, which addresses the server announces."""
    options = ["--checksum"] if spec.mptcp.checksum else []
    if role == "client":
        paths = 1 if not spec.mptcp.client_subflow_endpoints else spec.mptcp.subflows + 1
        for address in addresses[:max(1, paths)]:
            options += ["--local", address]
    else:
        for address in spec.mptcp.server_signal:
            options += ["--announce", address]
    return options


def command_problem(output: str) -> str | None:
    """The message of a command endpoint's "command" error in its output (its program did not
    start, become ready or exit), else None."""
    try:
        _listening, reports = parse_output(output)
    except ReportError:
        return None
    return next((f"{r.role} command: {r.error}" for r in reports if r.error_kind == "command"), None)


def vm_endpoint_command(role: str, release: str, state: Path, work: Path, command: list[str]) -> list[str]:
    """The endpoint program run by a VM on kernel `release` in place of the host's namespace."""
    return [sys.executable, "-m", "testbed.endpoints.vm_kernel", "--kernel", release,
            "--state", str(state), "--rwdir", str(work), *(["--hold"] if role == "client" else []),
            "--", *command]


def endpoint_command(role: str, stack: str, spec: ExperimentSpec, listen: str, bind: str | None,
                     timeseries: Path, addresses: list[str], rng_seed: int | None = None) -> list[str]:
    """The endpoint program's command line (the same contract for every stack)."""
    traffic = spec.traffic
    endpoint = spec.client if role == "client" else spec.server
    receiving = (traffic.direction == "upload") == (role == "server")
    stack_config = dict(endpoint.stack_config)
    if receiving and stack == "python" and traffic.receiver_buffer_max_bytes is not None:
        stack_config["recv_buffer"] = traffic.receiver_buffer_max_bytes
    if not receiving and stack == "python" and traffic.sender_buffer_bytes is not None:
        stack_config["send_buffer"] = traffic.sender_buffer_bytes
    if role == "server" and stack == "python" and spec.mptcp.server_c_flag:
        stack_config["allow_join_initial_addr_port"] = False
    command = [sys.executable, "-m", ENDPOINT_MODULES[stack], role,
               "--tcp" if stack == "tcp" else "--mptcp",
               *(["--stack-config", json.dumps(stack_config)] if stack_config else []),
               *(python_stack_options(role, spec, addresses) if stack == "python" else []),
               *(["--rng-seed", str(rng_seed)] if rng_seed is not None else []),
               "--timeout", str(traffic.timeout_s), "--sample-ms", str(traffic.sample_ms),
               "--timeseries", str(timeseries)]
    if receiving:  # the received bytes, for the integrity oracle (removed once judged)
        command += ["--received-file", str(received_file_of(timeseries.parent, role))]
    if role == "server":
        return [*command, "--listen", listen]
    command += ["--connect", listen, "--direction", traffic.direction, "--seed", str(spec.seed)]
    if bind:
        command += ["--bind", f"[{bind}]" if ":" in bind else bind]
    if traffic.type == "request_response":
        command += ["--requests", str(traffic.requests), "--request-bytes", str(traffic.request_bytes),
                    "--response-bytes", str(traffic.response_bytes),
                    *(["--rate-per-s", str(traffic.rate_per_s)] if traffic.rate_per_s else [])]
    elif traffic.bytes is not None:
        command += ["--bytes", str(traffic.bytes)]
    else:
        command += ["--seconds", str(traffic.seconds)]
    return command


def received_file_of(work: Path, role: str) -> Path:
    """Where the receiving endpoint keeps the payload it received."""
    return work / f"{role}.received.bin"
