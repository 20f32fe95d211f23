"""Experiment specs: TOML files describing topology, middleboxes, endpoints, traffic, a timeline
of live link changes, MPTCP settings, expectations and a seed.

Every table is checked strictly: an unknown key, a wrong type or an impossible value is a
SpecError naming the file, the key and what is allowed, raised before anything is built.
See experiments/two_path_kernel.toml for a commented example.
"""

from __future__ import annotations

import math
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import SpecError
from testbed.net.params import LinkParams
from testbed.net.topo import NodeKind, Topology, ip_version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

STACKS = ("kernel", "tcp", "python", "command")
KERNEL_CONGESTION_CONTROLS = ("reno", "cubic", "bbr")
OUTCOMES = ("mptcp", "fallback-syn", "fallback-infinite-map", "mp-fail", "subflow-rejected",
            "reset", "stalled")
# what the application received (testbed.integrity; "unknown" is never expected)
INTEGRITY_CLASSES = ("ok", "alg-edited", "truncated", "corrupted")


def _table(data: Any, where: str, allowed: dict[str, type | tuple[type, ...]],
           required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: must be a table")
    for key in data:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in data:
            raise SpecError(f"{where}: missing required key {key!r}")
    for key, value in data.items():
        expected = allowed[key]
        types = expected if isinstance(expected, tuple) else (expected,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            continue
        if isinstance(value, bool) and bool not in types:
            raise SpecError(f"{where}.{key}: expected {_type_names(types)}, got a boolean")
        if not isinstance(value, types):
            raise SpecError(f"{where}.{key}: expected {_type_names(types)}, got {value!r}")
    return data


def _type_names(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             dict: "a table", list: "a list"}
    return " or ".join(names.get(t, t.__name__) for t in types)


@dataclass(frozen=True)
class MiddleboxPlacement:
    node: str
    type: str
    params: dict[str, Any]


@dataclass(frozen=True)
class EndpointSpec:
    role: str  # "client" | "server"
    host: str
    stack: str  # "kernel" | "tcp" | "python"
    stack_config: dict[str, Any] = field(default_factory=dict)  # python stack: StackConfig fields
    # a kernel endpoint on a fetched kernel in a VM (testbed.endpoints.vm_kernel): a release
    # prefix or "newest"; None = the host's kernel in the host's namespace
    kernel: str | None = None
    # a command endpoint (stack = "command", testbed.endpoints.command_endpoint): the program's
    # command line template, how the server shows it is ready, and the [stacks.NAME] it came from
    command: str | None = None
    ready: str = "listen"
    command_name: str | None = None
    done: str = "exit"  # when the server's transfer is over: its program exits, or the peer closed

    @property
    def label(self) -> str:
        """The stack as results name it: "command:NAME" for a named command stack."""
        return f"command:{self.command_name}" if self.command_name else self.stack


@dataclass(frozen=True)
class TrafficSpec:
    bytes: int | None = None
    seconds: float | None = None
    direction: str = "upload"
    port: int = 5201
    sample_ms: float = 50.0
    timeout_s: float = 60.0
    congestion_control: str | None = None  # kernel endpoints' TCP CC; None = the machine's default
    # the largest socket buffer kernel endpoints may autotune to (tcp_rmem/tcp_wmem max, set in
    # both endpoint namespaces); None = the kernel's default (6 MiB receive, 4 MiB send), which
    # caps goodput on long fat paths below the link rate
    kernel_buffer_max_bytes: int | None = None
    # the receiving endpoint's buffer alone (the server on upload, the client on download): a
    # kernel receiver's tcp_rmem max, a python receiver's recv_buffer (its advertised window);
    # bounded, a loss-stalled subflow holds it full and the other subflows wait (docs/scenarios.md)
    receiver_buffer_max_bytes: int | None = None
    # the sending endpoint's send buffer from the start: a kernel sender's tcp_wmem default and
    # max (autotuning sizes it from the congestion window, too small to hold what one path sends
    # while another path's hole keeps it unacknowledged at the data level), a python sender's
    # send_buffer
    sender_buffer_bytes: int | None = None
    # kernel endpoints' TCP retransmission timeout cap (net.ipv4.tcp_rto_max_ms, Linux >= 6.15);
    # None = the kernel's 120 s. A path absent for a minute otherwise stays unused after it returns
    kernel_rto_max_ms: int | None = None
    # kernel endpoints' net.ipv4.tcp_retries2 (default 15): with a capped RTO, 15 retries last
    # seconds, not the default quarter of an hour, and an absent path's subflow is closed
    kernel_tcp_retries2: int | None = None
    # "bulk" (bytes or seconds one way) or "request_response": `requests` requests of
    # `request_bytes` each answered with `response_bytes`, one outstanding at a time, started
    # `rate_per_s` per second (None: back to back); testbed.endpoints.request_response
    type: str = "bulk"
    requests: int | None = None
    request_bytes: int | None = None
    response_bytes: int | None = None
    rate_per_s: float | None = None

    @property
    def planned_s(self) -> float:
        """How long the traffic is planned to last: its seconds, or a paced request/response
        run's requests / rate (0 when it is open-ended: bytes, or back-to-back requests)."""
        if self.seconds is not None:
            return self.seconds
        if self.requests is not None and self.rate_per_s is not None:
            return self.requests / self.rate_per_s
        return 0.0


TRAFFIC_TYPES = ("bulk", "request_response")
REQUEST_RESPONSE_KEYS = ("requests", "request_bytes", "response_bytes", "rate_per_s")


@dataclass(frozen=True)
class TraceSpec:
    """A link following a trace file (testbed.net.traces), expanded into timeline events."""

    link: str
    file: str
    format: str = "auto"
    bin_ms: int = 100
    start_s: float = 0.0
    time_scale: float = 1.0
    outage: str = ""  # "down" | "hold"; "" = the format's default


@dataclass(frozen=True)
class MptcpSpec:
    subflows: int = 2
    add_addr_accepted: int = 2
    client_subflow_endpoints: bool = True  # the client's extra addresses as `subflow` endpoints
    server_signal: tuple[str, ...] = ()  # server addresses announced with ADD_ADDR
    checksum: bool = False
    # kernel endpoints: net.mptcp.stale_loss_cnt (MPTCP-level retransmission intervals without
    # progress before a subflow is stale and its data is reinjected elsewhere); None = 4, Linux's
    stale_loss_cnt: int | None = None
    # the server sets MP_CAPABLE's C flag (RFC 8684 3.1: do not open subflows to my initial
    # address and port): Linux's net.mptcp.allow_join_initial_addr_port=0, the python stack's
    # allow_join_initial_addr_port=false; joins then go to the addresses it announces
    server_c_flag: bool = False


@dataclass(frozen=True)
class TimelineEvent:
    """A live change at `at_s`: a link's parameters or state (`link`), or a middlebox switched
    on or off (`middlebox` = "NODE.INDEX", `active`)."""

    at_s: float
    link: str = ""
    set: dict[str, Any] = field(default_factory=dict)
    up: bool | None = None
    middlebox: str = ""
    active: bool | None = None
    trace: str = ""  # the trace file this change plays ([[traces]]), "" for a [[timeline]] entry

    @property
    def middlebox_slot(self) -> tuple[str, int]:
        """(node, index among that node's middleboxes in spec order) of a middlebox event."""
        node, _, index = self.middlebox.partition(".")
        return node, int(index or 0)


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    description: str
    seed: int
    topology: str
    topology_params: dict[str, Any]
    middleboxes: tuple[MiddleboxPlacement, ...]
    endpoints: tuple[EndpointSpec, ...]
    traffic: TrafficSpec
    mptcp: MptcpSpec
    timeline: tuple[TimelineEvent, ...]
    capture: bool
    expect: dict[str, Any]
    source: str = ""
    traces: tuple[TraceSpec, ...] = ()

    @property
    def client(self) -> EndpointSpec:
        return next(e for e in self.endpoints if e.role == "client")

    @property
    def server(self) -> EndpointSpec:
        return next(e for e in self.endpoints if e.role == "server")

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def finite_number(value: int | float, where: str) -> float:
    """A spec number as a float: TOML integers have no size limit in Python's parser, and
    one beyond a float's range, inf or nan is a one-line SpecError, not an OverflowError."""
    try:
        number = float(value)
    except OverflowError:
        raise SpecError(f"{where}: {value} is too large") from None
    if not math.isfinite(number):
        raise SpecError(f"{where}: must be a finite number, got {value!r}")
    return number


def read_toml(path: str | Path, what: str = "spec") -> dict[str, Any]:
    """A TOML file as a dict; a missing, unreadable or malformed file is a one-line SpecError."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: no such {what} file") from exc
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: malformed TOML: {exc}") from exc


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a spec file; every problem is a one-line SpecError."""
    return parse_spec(read_toml(path), source=str(path))


def parse_spec(raw: dict[str, Any], *, source: str = "<spec>") -> ExperimentSpec:
    top = _table(raw, source, {
        "name": str, "description": str, "seed": int, "topology": dict, "middleboxes": list,
        "endpoints": list, "traffic": dict, "mptcp": dict, "timeline": list, "capture": dict,
        "expect": dict, "stacks": dict, "traces": list,
    }, required=("topology", "endpoints", "traffic"))
    stacks = parse_command_stacks(top.get("stacks", {}), f"{source}: [stacks]")

    topo_raw = _table(top["topology"], f"{source}: [topology]", {"name": str, "params": dict},
                      required=("name",))
    middleboxes = []
    for i, item in enumerate(top.get("middleboxes", [])):
        where = f"{source}: middleboxes[{i}]"
        box = _table(item, where, {"node": str, "type": str, "params": dict},
                     required=("node", "type"))
        middleboxes.append(MiddleboxPlacement(box["node"], box["type"], dict(box.get("params", {}))))

    endpoints = []
    for i, item in enumerate(top["endpoints"]):
        where = f"{source}: endpoints[{i}]"
        ep = _table(item, where, {"role": str, "host": str, "stack": str, "stack_config": dict,
                                  "kernel": str, "command": str, "ready": str, "done": str},
                    required=("role", "stack"))
        if ep["role"] not in ("client", "server"):
            raise SpecError(f"{where}.role: {ep['role']!r} is not client or server")
        command_name, command, ready, done = _command_endpoint(ep, stacks, where)
        stack = "command" if ep["stack"].startswith("command:") else ep["stack"]
        if stack not in STACKS:
            raise SpecError(f"{where}.stack: unknown stack {ep['stack']!r} (known: {', '.join(STACKS)}, "
                            f"command:NAME)")
        stack_config = dict(ep.get("stack_config", {}))
        if stack_config:
            _validate_stack_config(stack_config, stack, f"{where}.stack_config")
        kernel = _endpoint_kernel(ep.get("kernel"), stack, f"{where}.kernel")
        endpoints.append(EndpointSpec(ep["role"], ep.get("host", ep["role"]), stack, stack_config,
                                      kernel, command, ready, command_name, done))
    roles = sorted(e.role for e in endpoints)
    if roles != ["client", "server"]:
        raise SpecError(f"{source}: endpoints must be exactly one client and one server, got {roles}")

    tr = _table(top["traffic"], f"{source}: [traffic]", {
        "bytes": int, "seconds": float, "direction": str, "port": int, "sample_ms": float,
        "timeout_s": float, "congestion_control": str, "kernel_buffer_max_bytes": int,
        "receiver_buffer_max_bytes": int, "sender_buffer_bytes": int,
        "kernel_rto_max_ms": int, "kernel_tcp_retries2": int,
        "type": str, "requests": int, "request_bytes": int, "response_bytes": int,
        "rate_per_s": float,
    })
    request_response = _request_response(tr, endpoints, source)
    if tr.get("congestion_control", "cubic") not in KERNEL_CONGESTION_CONTROLS:
        raise SpecError(f"{source}: [traffic].congestion_control {tr['congestion_control']!r} is not one of "
                        f"{', '.join(KERNEL_CONGESTION_CONTROLS)}")
    if not request_response and ("bytes" in tr) == ("seconds" in tr):
        raise SpecError(f"{source}: [traffic] needs exactly one of bytes or seconds")
    if tr.get("bytes", 1) <= 0 or tr.get("seconds", 1) <= 0:
        raise SpecError(f"{source}: [traffic] bytes/seconds must be positive")
    if tr.get("direction", "upload") not in ("upload", "download"):
        raise SpecError(f"{source}: [traffic].direction must be upload or download")
    if tr.get("direction") == "download" and any(e.stack == "command" for e in endpoints):
        raise SpecError(f"{source}: [traffic].direction: command endpoints carry the payload client "
                        f"-> server only; use direction = \"upload\"")
    if not 1 <= tr.get("port", 5201) <= 65535:
        raise SpecError(f"{source}: [traffic].port must be 1..65535")
    if not 10 <= tr.get("sample_ms", 50) <= 100:
        raise SpecError(f"{source}: [traffic].sample_ms must be 10..100 (bins are at most 100 ms)")
    if not 65536 <= tr.get("kernel_buffer_max_bytes", 65536) <= 1 << 30:
        raise SpecError(f"{source}: [traffic].kernel_buffer_max_bytes must be 65536..1073741824")
    if not 16384 <= tr.get("receiver_buffer_max_bytes", 16384) <= 1 << 30:
        raise SpecError(f"{source}: [traffic].receiver_buffer_max_bytes must be 16384..1073741824")
    if not 16384 <= tr.get("sender_buffer_bytes", 16384) <= 1 << 30:
        raise SpecError(f"{source}: [traffic].sender_buffer_bytes must be 16384..1073741824")
    if not 200 <= tr.get("kernel_rto_max_ms", 1000) <= 120_000:
        raise SpecError(f"{source}: [traffic].kernel_rto_max_ms must be 200..120000 (the kernel's range)")
    if not 1 <= tr.get("kernel_tcp_retries2", 15) <= 255:
        raise SpecError(f"{source}: [traffic].kernel_tcp_retries2 must be 1..255")
    seconds = finite_number(tr["seconds"], f"{source}: [traffic].seconds") \
        if "seconds" in tr else None
    traffic = TrafficSpec(
        bytes=tr.get("bytes"), seconds=seconds,
        direction="download" if request_response else tr.get("direction", "upload"),
        port=tr.get("port", 5201), sample_ms=float(tr.get("sample_ms", 50.0)),
        timeout_s=finite_number(tr.get("timeout_s", max(60.0, (seconds or 0) * 3,
                                                        _paced_s(request_response) * 3)),
                                f"{source}: [traffic].timeout_s"),
        congestion_control=tr.get("congestion_control"),
        kernel_buffer_max_bytes=tr.get("kernel_buffer_max_bytes"),
        receiver_buffer_max_bytes=tr.get("receiver_buffer_max_bytes"),
        sender_buffer_bytes=tr.get("sender_buffer_bytes"),
        kernel_rto_max_ms=tr.get("kernel_rto_max_ms"),
        kernel_tcp_retries2=tr.get("kernel_tcp_retries2"),
        **request_response,
    )
    receiver = "server" if traffic.direction == "upload" else "client"
    for knob, role, config in (("receiver_buffer_max_bytes", receiver, "recv_buffer"),
                               ("sender_buffer_bytes", "client" if receiver == "server" else "server",
                                "send_buffer")):
        for endpoint in endpoints:
            if getattr(traffic, knob) is None or endpoint.role != role:
                continue
            if endpoint.stack not in ("kernel", "python"):
                raise SpecError(f"{source}: [traffic].{knob} sizes a kernel or python endpoint's buffer; "
                                f"the {role} here is {endpoint.label}")
            if config in endpoint.stack_config:
                raise SpecError(f"{source}: [traffic].{knob} and the {role}'s stack_config.{config} "
                                f"both set its buffer: keep one")

    mp = _table(top.get("mptcp", {}), f"{source}: [mptcp]", {
        "subflows": int, "add_addr_accepted": int, "client_subflow_endpoints": bool,
        "server_signal": list, "checksum": bool, "stale_loss_cnt": int, "server_c_flag": bool,
    })
    if mp.get("server_c_flag"):
        server = next(e for e in endpoints if e.role == "server")
        if server.stack not in ("kernel", "python"):
            raise SpecError(f"{source}: [mptcp].server_c_flag: the server's stack {server.label} "
                            "cannot set MP_CAPABLE's C flag (kernel and python can); drop the key "
                            "or change the server's stack")
        if "allow_join_initial_addr_port" in server.stack_config:
            raise SpecError(f"{source}: [mptcp].server_c_flag and the server's "
                            "stack_config.allow_join_initial_addr_port both set the C flag: keep one")
    if not 1 <= mp.get("stale_loss_cnt", 1) <= 1000:
        raise SpecError(f"{source}: [mptcp].stale_loss_cnt must be 1..1000")
    for key in ("subflows", "add_addr_accepted"):
        if not 0 <= mp.get(key, 0) <= 8:
            raise SpecError(f"{source}: [mptcp].{key} must be 0..8 (the kernel's limit)")
    mptcp = MptcpSpec(
        subflows=mp.get("subflows", 2), add_addr_accepted=mp.get("add_addr_accepted", 2),
        client_subflow_endpoints=mp.get("client_subflow_endpoints", True),
        server_signal=tuple(str(a) for a in mp.get("server_signal", [])),
        checksum=mp.get("checksum", False), stale_loss_cnt=mp.get("stale_loss_cnt"),
        server_c_flag=mp.get("server_c_flag", False),
    )

    timeline = []
    for i, item in enumerate(top.get("timeline", [])):
        where = f"{source}: timeline[{i}]"
        ev = _table(item, where, {"at_s": float, "link": str, "set": dict, "up": bool,
                                  "middlebox": str, "active": bool}, required=("at_s",))
        if ev["at_s"] < 0:
            raise SpecError(f"{where}.at_s must be >= 0")
        if ev["at_s"] > 1e9:  # (a huge integer would overflow float() below)
            raise SpecError(f"{where}.at_s must be at most 1e9 seconds")
        if "middlebox" in ev:
            timeline.append(_middlebox_event(ev, middleboxes, where))
            continue
        if "link" not in ev:
            raise SpecError(f"{where}: needs `link = \"NAME\"` (with set or up) or "
                            f"`middlebox = \"NODE.INDEX\"` (with active)")
        if "active" in ev:
            raise SpecError(f"{where}: `active` switches a middlebox: give `middlebox = "
                            f"\"NODE.INDEX\"` instead of link")
        if "set" not in ev and "up" not in ev:
            raise SpecError(f"{where}: needs `set = {{...}}` (link parameters) or `up = true/false`")
        LinkParams().updated(ev.get("set", {}), where=f"{where}.set")  # validates keys and values
        timeline.append(TimelineEvent(float(ev["at_s"]), ev["link"], dict(ev.get("set", {})),
                                      ev.get("up")))
    traces = parse_traces(top.get("traces", []), source)
    timeline.extend(trace_timeline(traces, traffic, source))
    timeline.sort(key=lambda e: e.at_s)

    capture = _table(top.get("capture", {}), f"{source}: [capture]", {"pcap": bool})
    expect = _table(top.get("expect", {}), f"{source}: [expect]", {
        "outcome": (str, list), "integrity": str, "min_goodput_mbps": float, "max_goodput_mbps": float,
        "subflows": int, "trace_share": dict,
    })
    if "trace_share" in expect:
        from testbed.trace_share import validate_share_expectation

        validate_share_expectation(expect["trace_share"], f"{source}: [expect].trace_share")
    # one outcome, or a list of outcomes any of which passes (a run measured to vary between them)
    outcomes = expect.get("outcome", [])
    for outcome in outcomes if isinstance(outcomes, list) else [outcomes]:
        if outcome not in OUTCOMES:
            hint = " (corrupted is an integrity class now: [expect].integrity)" \
                if outcome == "corrupted" else ""
            raise SpecError(f"{source}: [expect].outcome {outcome!r} is not one of "
                            f"{', '.join(OUTCOMES)}{hint}")
    if outcomes == [] and "outcome" in expect:
        raise SpecError(f"{source}: [expect].outcome is an empty list; give one outcome or several")
    if "integrity" in expect and expect["integrity"] not in INTEGRITY_CLASSES:
        raise SpecError(f"{source}: [expect].integrity {expect['integrity']!r} is not one of "
                        f"{', '.join(INTEGRITY_CLASSES)}")

    return ExperimentSpec(
        name=top.get("name", Path(source).stem), description=top.get("description", ""),
        seed=top.get("seed", 1), topology=topo_raw["name"],
        topology_params=dict(topo_raw.get("params", {})), middleboxes=tuple(middleboxes),
        endpoints=tuple(endpoints), traffic=traffic, mptcp=mptcp, timeline=tuple(timeline),
        capture=capture.get("pcap", False), expect=dict(expect), source=source,
        traces=traces,
    )


def _paced_s(request_response: dict[str, Any]) -> float:
    """The planned length of paced request/response traffic (0: bulk or back to back)."""
    rate = request_response.get("rate_per_s")
    return request_response["requests"] / rate if rate else 0.0


def _request_response(tr: dict[str, Any], endpoints: list[EndpointSpec],
                      source: str) -> dict[str, Any]:
    """The TrafficSpec fields of `type = "request_response"` ({} for bulk traffic); the
    responses are the payload the integrity oracle judges, so the direction is download."""
    where = f"{source}: [traffic]"
    kind = tr.get("type", "bulk")
    if kind not in TRAFFIC_TYPES:
        raise SpecError(f"{where}.type {kind!r} is not one of {', '.join(TRAFFIC_TYPES)}")
    given = [key for key in REQUEST_RESPONSE_KEYS if key in tr]
    if kind == "bulk":
        if given:
            raise SpecError(f"{where}.{given[0]} belongs to type = \"request_response\"")
        return {}
    for key in ("bytes", "seconds", "direction"):
        if key in tr:
            raise SpecError(f"{where}.{key}: request_response traffic is sized by requests, "
                            f"request_bytes and response_bytes; remove {key}")
    for key in ("requests", "request_bytes", "response_bytes"):
        if key not in tr:
            raise SpecError(f"{where}: type = \"request_response\" needs {key}")
    if not 1 <= tr["requests"] <= 1_000_000:
        raise SpecError(f"{where}.requests must be 1..1000000")
    for key in ("request_bytes", "response_bytes"):
        if not 1 <= tr[key] <= 1 << 30:
            raise SpecError(f"{where}.{key} must be 1..1073741824")
    rate = finite_number(tr["rate_per_s"], f"{where}.rate_per_s") if "rate_per_s" in tr else None
    if rate is not None and not 0.01 <= rate <= 100_000:
        raise SpecError(f"{where}.rate_per_s must be 0.01..100000 (leave it out: back to back)")
    if rate is not None and 1 / rate >= finite_number(tr.get("timeout_s", 60.0), f"{where}.timeout_s"):
        raise SpecError(f"{where}.rate_per_s {rate:g} leaves {1 / rate:g} s between requests, longer "
                        f"than the endpoints' idle timeout (timeout_s); raise rate_per_s or timeout_s")
    for endpoint in endpoints:
        if endpoint.stack == "command":
            raise SpecError(f"{where}: request_response needs kernel, tcp or python endpoints; "
                            f"the {endpoint.role} is {endpoint.label}")
    return {"type": kind, "requests": tr["requests"], "request_bytes": tr["request_bytes"],
            "response_bytes": tr["response_bytes"], "rate_per_s": rate}


def parse_traces(raw: list[Any], source: str) -> tuple[TraceSpec, ...]:
    """`[[traces]]` tables: link, file, and optionally format, bin_ms, start_s, time_scale,
    outage; the file is read here, so a bad trace stops the run before anything is built."""
    from testbed.net.traces import FORMATS, OUTAGES

    traces = []
    for i, item in enumerate(raw):
        where = f"{source}: traces[{i}]"
        tr = _table(item, where, {"link": str, "file": str, "format": str, "bin_ms": int,
                                  "start_s": float, "time_scale": float, "outage": str},
                    required=("link", "file"))
        if tr.get("format", "auto") not in ("auto", *FORMATS):
            raise SpecError(f"{where}.format: {tr['format']!r} is not one of auto, {', '.join(FORMATS)}")
        if tr.get("outage", "down") not in OUTAGES:
            raise SpecError(f"{where}.outage: {tr['outage']!r} is not one of {', '.join(OUTAGES)}")
        if not 1 <= tr.get("bin_ms", 100) <= 10_000:
            raise SpecError(f"{where}.bin_ms must be 1..10000")
        start_s = finite_number(tr.get("start_s", 0.0), f"{where}.start_s")
        time_scale = finite_number(tr.get("time_scale", 1.0), f"{where}.time_scale")
        if start_s < 0 or not 0.001 <= time_scale <= 1000:
            raise SpecError(f"{where}: start_s must be >= 0 and time_scale 0.001..1000")
        if any(t.link == tr["link"] for t in traces):
            raise SpecError(f"{where}: link {tr['link']!r} already follows a trace; one per link")
        traces.append(TraceSpec(tr["link"], tr["file"], tr.get("format", "auto"),
                                tr.get("bin_ms", 100), start_s, time_scale, tr.get("outage", "")))
    return tuple(traces)


def trace_timeline(traces: tuple[TraceSpec, ...], traffic: TrafficSpec,
                   source: str) -> list[TimelineEvent]:
    """Each trace played as timeline events until the transfer's end (its seconds, or its
    timeout for a transfer of a number of bytes): the runner applies them like any other."""
    from testbed.net.traces import play, read_trace, resolve_trace_path

    until_s = traffic.seconds if traffic.seconds is not None else traffic.timeout_s
    events = []
    for trace in traces:
        path = resolve_trace_path(trace.file, source)
        parsed = read_trace(path, format=trace.format, bin_ms=trace.bin_ms)
        for change in play(parsed, until_s=until_s, start_s=trace.start_s,
                           time_scale=trace.time_scale, outage=trace.outage or None):
            if change.set:
                LinkParams().updated(change.set, where=f"{path} at {change.at_s:g} s")
            events.append(TimelineEvent(change.at_s, trace.link, dict(change.set), change.up,
                                        trace=trace.file))
    return events


def _middlebox_event(ev: dict[str, Any], middleboxes: list[MiddleboxPlacement],
                     where: str) -> TimelineEvent:
    """A timeline entry switching a middlebox: `middlebox = "NODE.INDEX"` (INDEX counts the
    node's middleboxes in spec order from 0; a node with one box may be named alone) and
    `active = true/false`, nothing else."""
    if "link" in ev or "set" in ev or "up" in ev:
        raise SpecError(f"{where}: a middlebox entry takes only at_s, middlebox and active "
                        f"(link changes go in their own entries)")
    if "active" not in ev:
        raise SpecError(f"{where}: a middlebox entry needs `active = true` or `active = false`")
    name = ev["middlebox"]
    node, dot, index_text = name.partition(".")
    on_node = [box for box in middleboxes if box.node == node]
    if not on_node:
        nodes = sorted({box.node for box in middleboxes})
        raise SpecError(f"{where}.middlebox: no middlebox on node {node!r} in this spec "
                        f"(nodes with middleboxes: {', '.join(nodes) or 'none'})")
    if not dot and len(on_node) > 1:
        raise SpecError(f"{where}.middlebox: node {node!r} has {len(on_node)} middleboxes; "
                        f"name one as {node}.0 .. {node}.{len(on_node) - 1}")
    if dot and not (index_text.isdigit() and int(index_text) < len(on_node)):
        raise SpecError(f"{where}.middlebox: {name!r}: the index must be 0..{len(on_node) - 1} "
                        f"(the node's middleboxes in spec order)")
    slot = f"{node}.{int(index_text) if dot else 0}"
    return TimelineEvent(float(ev["at_s"]), middlebox=slot, active=ev["active"])


def parse_command_stacks(raw: Any, where: str) -> dict[str, dict[str, str]]:
    """`[stacks.NAME]` tables: a named command stack (client and server command templates, the
    server's readiness) that endpoints and matrix pairings name as `command:NAME`."""
    from testbed.endpoints.command_template import (
        STACK_NAME,
        TemplateError,
        check_done,
        check_ready,
        check_template,
    )

    if not isinstance(raw, dict):
        raise SpecError(f"{where}: must be a table of [stacks.NAME] tables")
    stacks: dict[str, dict[str, str]] = {}
    for name, table in raw.items():
        if not STACK_NAME.fullmatch(name):
            raise SpecError(f"{where}: stack name {name!r} must be 1-40 letters, digits, '_' or '.' "
                            f"(no '-': it separates a pairing's client and server)")
        entry = _table(table, f"{where}.{name}", {"client": str, "server": str, "ready": str,
                                                   "done": str, "description": str},
                       required=("client", "server"))
        try:
            for role in ("client", "server"):
                check_template(entry[role])
            check_ready(entry.get("ready", "listen"))
            check_done(entry.get("done", "exit"))
        except TemplateError as exc:
            raise SpecError(f"{where}.{name}: {exc}") from None
        stacks[name] = dict(entry)
    return stacks


def _command_endpoint(ep: dict[str, Any], stacks: dict[str, dict[str, str]],
                      where: str) -> tuple[str | None, str | None, str, str]:
    """(stack name, command template, ready, done) of a command endpoint; (None, None,
    "listen", "exit") for another stack, which must not carry command keys."""
    from testbed.endpoints.command_template import TemplateError, check_done, check_ready, check_template

    stack: str = ep["stack"]
    if not (stack == "command" or stack.startswith("command:")):
        extra = [key for key in ("command", "ready", "done") if key in ep]
        if extra:
            raise SpecError(f"{where}.{extra[0]}: only command endpoints (stack = \"command\") take "
                            f"a {extra[0]} (this one is {stack})")
        return None, None, "listen", "exit"
    name = stack.partition(":")[2] or None
    if name is None:
        if "command" not in ep:
            raise SpecError(f"{where}: stack = \"command\" needs command = \"PROGRAM ARGS...\" "
                            f"(or stack = \"command:NAME\" with a [stacks.NAME] table)")
        command, ready, done = ep["command"], ep.get("ready", "listen"), ep.get("done", "exit")
    else:
        if name not in stacks:
            raise SpecError(f"{where}.stack: no [stacks.{name}] table in this spec "
                            f"(defined: {', '.join(stacks) or 'none'})")
        if "command" in ep:
            raise SpecError(f"{where}.command: stack {stack!r} takes its command from [stacks.{name}]")
        table = stacks[name]
        command = table[ep["role"]]
        ready = ep.get("ready", table.get("ready", "listen"))
        done = ep.get("done", table.get("done", "exit"))
    try:
        check_template(command)
        check_ready(ready)
        check_done(done)
    except TemplateError as exc:
        raise SpecError(f"{where}.command: {exc}") from None
    return name, command, ready, done


def _endpoint_kernel(value: str | None, stack: str, where: str) -> str | None:
    """`kernel = "6.12"` (a fetched kernel's release prefix or "newest"); "host" = no VM."""
    if value is None or value == "host":
        return None
    if stack != "kernel":
        raise SpecError(f"{where}: only kernel endpoints run on another kernel (this one is {stack})")
    from testbed.kernels import SELECTOR

    if not re.fullmatch(SELECTOR, value):
        raise SpecError(f"{where}: {value!r} is not a kernel release prefix, 'newest' or 'host' "
                        f"(see `testbed kernels list`)")
    return value


def _validate_stack_config(config: dict[str, Any], stack: str, where: str) -> None:
    """The bundled stack's settings (testbed.mptcp.config.StackConfig), checked before any run."""
    if stack != "python":
        raise SpecError(f"{where}: only python endpoints take a stack_config (this one is {stack})")
    from testbed.mptcp.config import StackConfig

    try:
        StackConfig.from_dict(dict(config))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}") from exc


def check_against_topology(spec: ExperimentSpec, topo: Topology) -> None:
    """Names in the spec that must exist in the topology: hosts, middlebox nodes, links."""
    for ep in spec.endpoints:
        node = topo.nodes.get(ep.host)
        if node is None or node.kind is not NodeKind.HOST:
            hosts = [n for n, s in topo.nodes.items() if s.kind is NodeKind.HOST]
            raise SpecError(f"{spec.source}: endpoint host {ep.host!r} is not a host of {topo.name} "
                            f"(hosts: {', '.join(hosts)})")
    bumps = [n for n, s in topo.nodes.items() if s.kind is NodeKind.MIDDLEBOX]
    for box in spec.middleboxes:
        if box.node not in bumps:
            raise SpecError(f"{spec.source}: middlebox node {box.node!r} is not in {topo.name} "
                            f"(middlebox nodes: {', '.join(bumps)})")
        _validate_middlebox(box, spec)
    for ev in spec.timeline:
        if ev.middlebox:
            continue  # checked against the spec's middleboxes when parsed
        if ev.link not in topo.links:
            raise SpecError(f"{spec.source}: timeline link {ev.link!r} is not in {topo.name} "
                            f"(links: {', '.join(topo.links)})")
    share_link = spec.expect.get("trace_share", {}).get("link")
    if share_link is not None and share_link not in topo.links:
        raise SpecError(f"{spec.source}: [expect].trace_share.link {share_link!r} is not in "
                        f"{topo.name} (links: {', '.join(topo.links)})")
    server_addresses = topo.host_addresses(spec.server.host)
    for address in spec.mptcp.server_signal:
        if (version := ip_version(address)) not in topo.versions:
            raise SpecError(f"{spec.source}: [mptcp].server_signal {address!r} is an IPv{version} "
                            f"address but {topo.name} is IPv{topo.versions[0]}-only (family = "
                            f"{topo.family!r}); use one of {', '.join(server_addresses)} (or "
                            f"[topology.params] family = \"dual\")")
        if address not in server_addresses:
            raise SpecError(f"{spec.source}: [mptcp].server_signal {address!r} is not an address of "
                            f"{spec.server.host} ({', '.join(server_addresses)})")


def _validate_middlebox(box: MiddleboxPlacement, spec: ExperimentSpec) -> None:
    """Build the middlebox once, so a bad name or parameter fails before anything runs."""
    try:
        from middleboxes.registry import MiddleboxSpecError, build_middlebox
    except ImportError as exc:  # pragma: no cover - the package ships with the project
        raise SpecError(f"middlebox catalogue unavailable: {exc}") from exc
    try:
        build_middlebox(box.type, dict(box.params), random.Random(spec.seed))
    except MiddleboxSpecError as exc:
        raise SpecError(f"{spec.source}: middleboxes on {box.node}: {exc}") from exc
