"""The typed result of one run, and the one place that reads result and matrix files.

`Result.to_json()` is exactly the result.json document (Flent's resultset.py is the model):
schema version, environment and backends, topology, timeline as applied, middleboxes, and per
connection the outcome, bytes per subflow, integrity and counters; since schema 2 also what
each endpoint ran with (its RNG seed, payload seed, exit code) and what teardown could not
undo. `load_result` reads any schema this testbed knows, upgrading older files step by step,
so compare, report and matrix never check schema numbers themselves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError

SCHEMA = 3  # of result.json; 2 added `endpoints` and `teardown_problems`; 3 the integrity oracle
MATRIX_SCHEMA = 1  # of matrix.json
RESULT_FILE = "result.json"
KIND = "experiment"


@dataclass
class SubflowResult:
    """Bytes and RTT of one subflow, as its endpoints reported them."""

    local: str
    remote: str
    bytes: int
    bytes_sent: int
    bytes_retrans: int
    rtt_ms: float
    open_at_end: bool
    family: str = ""  # "IPv4" | "IPv6" (testbed.net.topo.family_label of `local`); "" in older results
    # wall-clock time (Unix seconds) of the endpoint's last sample of this subflow: its counts
    # stop there (a subflow that closed, or a socket the endpoint gave up on, is not read after
    # it); None in files from before it was recorded
    last_sample_unix: float | None = None


@dataclass
class ConnectionResult:
    """Outcome, integrity and evidence of one connection (testbed.outcome's two axes)."""

    client_stack: str
    server_stack: str
    mptcp: bool
    outcome: str
    evidence: dict[str, Any]
    subflows: list[SubflowResult]
    bytes: int
    duration_s: float
    goodput_mbps: float
    integrity: str  # testbed.integrity.INTEGRITY_CLASSES
    problems: list[str]
    sha256: dict[str, str]
    counters: dict[str, dict[str, int]]
    stack_counters: dict[str, dict[str, int] | None]
    mptcp_info: dict[str, dict[str, Any] | None]
    # the oracle's Verdict (testbed.integrity): reference stream, where a difference starts, why
    integrity_verdict: dict[str, Any] = field(default_factory=dict)
    # subflows expected to carry data: the spec's, less backups (None in files before schema 3)
    expected_subflows: int | None = None
    # request/response traffic (testbed.latency_result): percentiles, wire bytes per payload
    # byte; None for bulk traffic
    latency: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ConnectionResult:
        return cls(**{**doc, "subflows": [SubflowResult(**s) for s in doc["subflows"]]})


@dataclass
class EndpointRecord:
    """What one endpoint program ran with and how it ended: enough to replay it.

    `seed` seeds a python endpoint's stack RNG (keys, nonces, ISNs); None for a kernel endpoint,
    whose kernel draws its own. `payload_seed` is the seed of the payload this end sent (None
    when it sent nothing). `exit_code` is None in files from before schema 2.
    """

    stack: str
    seed: int | None
    payload_seed: int | None
    exit_code: int | None
    # the kernel release a kernel/tcp endpoint ran on (the host's, or its VM's); None for python
    # and in older files (both optional keys are left out of result.json when None)
    kernel: str | None = None
    # a VM endpoint's figures (testbed.endpoints.vm_kernel): boot_s, vcpu_busy, cpu_bound, ...
    vm: dict[str, Any] | None = None
    # a command endpoint's program (stack = "command"): command line, exit status, stderr tail,
    # where its kernel figures came from
    command: dict[str, Any] | None = None


@dataclass
class Result:
    """One run's result.json as a typed object (field order = key order in the file)."""

    name: str
    description: str
    spec: dict[str, Any]
    seed: int
    environment: dict[str, Any]
    topology: dict[str, Any]
    middleboxes: list[dict[str, Any]]
    middlebox_stats: dict[str, Any]
    timeline: list[dict[str, Any]]
    shaping: dict[str, Any]
    loss_counters: dict[str, Any]
    connections: list[ConnectionResult]
    timeseries: dict[str, Any]
    timings: dict[str, float]
    expect: dict[str, Any]
    expectations: dict[str, Any]
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)
    teardown_problems: list[str] = field(default_factory=list)
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        """The result.json document: plain JSON values (a round trip through json is exact)."""
        doc: dict[str, Any] = {"schema": SCHEMA, "kind": KIND}
        doc.update(asdict(self))
        if not self.interrupted:
            del doc["interrupted"]  # only interrupted runs carry the key, as before schema 2
        for connection in doc["connections"]:  # absent when unknown (files from before it)
            for subflow in connection["subflows"]:
                if subflow.get("last_sample_unix") is None:
                    subflow.pop("last_sample_unix", None)
        for record in doc["endpoints"].values():  # optional keys: absent when unknown, as before
            for key in ("kernel", "vm", "command"):
                if record.get(key) is None:
                    record.pop(key, None)
        for connection in doc["connections"]:
            if connection.get("latency") is None:  # only request/response traffic has the key
                connection.pop("latency", None)
        for connection in doc["connections"]:  # a subflow's family: absent when unknown, as before
            for subflow in connection["subflows"]:
                if not subflow.get("family"):
                    subflow.pop("family", None)
        return json.loads(json.dumps(doc, default=str))

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Result:
        """A Result from a current-schema document (use `upgrade` first for older ones)."""
        values = {k: v for k, v in doc.items() if k not in ("schema", "kind")}
        try:
            values["connections"] = [ConnectionResult.from_json(c) for c in values["connections"]]
            values["endpoints"] = {role: EndpointRecord(**e) for role, e in values["endpoints"].items()}
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise TestbedError(f"result document does not have the schema {SCHEMA} shape: {exc}") from exc

    @property
    def connection(self) -> ConnectionResult:
        """The run's one connection (every run today has exactly one)."""
        return self.connections[0]


def _upgrade_1_to_2(doc: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 recorded no endpoint seeds, exit codes or teardown problems: the seeds that are
    known (the sender's payload seed) are filled in, the rest is None (not recorded). Early
    schema-1 files also lack a connection's stack_counters and mptcp_info (None: not read)."""
    connections = [{"stack_counters": {"client": None, "server": None},
                    "mptcp_info": {"client": None, "server": None}, **c}
                   for c in doc.get("connections") or []]
    direction = ((doc.get("spec") or {}).get("traffic") or {}).get("direction", "download")
    sender = "client" if direction == "upload" else "server"
    first = connections[0] if connections else {}
    endpoints = {role: {"stack": first.get(f"{role}_stack", "?"), "seed": None,
                        "payload_seed": doc.get("seed") if role == sender else None, "exit_code": None}
                 for role in ("client", "server")}
    upgraded = {k: v for k, v in doc.items() if k != "interrupted"}
    upgraded.update(schema=2, connections=connections, endpoints=endpoints, teardown_problems=[])
    if doc.get("interrupted"):
        upgraded["interrupted"] = True
    return upgraded


def _upgrade_2_to_3(doc: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 had `corrupted` as an outcome and integrity ok/mismatch. The outcome a corrupted
    connection would have had is the first `also NAME:` of its evidence (the rules ran in
    order), else mptcp; integrity becomes ok, corrupted (hash differed, bytes not kept) or
    truncated (an intact prefix: schema 2 only called a stream corrupted when it was not)."""
    connections = []
    for c in doc.get("connections") or []:
        c = dict(c)
        outcome = c.get("outcome")
        if c.get("integrity") == "ok":
            integrity = "ok"
        elif outcome == "corrupted":
            integrity = "corrupted"
        else:
            integrity = "truncated"
        if outcome == "corrupted":
            also = [e[5:e.index(":")] for e in c.get("evidence") or []
                    if isinstance(e, str) and e.startswith("also ") and ":" in e]
            c["outcome"] = also[0] if also else "mptcp"
        c["integrity"] = integrity
        c["integrity_verdict"] = {"integrity": integrity, "description":
                                  "upgraded from a schema 2 result (judged by hash, no edit log)"}
        connections.append(c)
    return {**doc, "schema": 3, "connections": connections}


UPGRADES = {1: _upgrade_1_to_2, 2: _upgrade_2_to_3}  # schema n -> the step to n + 1


def upgrade(doc: dict[str, Any], where: str = "result") -> dict[str, Any]:
    """A result document of any known schema, brought to SCHEMA one step at a time."""
    version = doc.get("schema")
    while version != SCHEMA:
        step = UPGRADES.get(version) if isinstance(version, int) else None
        if step is None:
            raise TestbedError(f"{where}: schema {version!r}, this testbed reads result schemas "
                               f"{min(UPGRADES)}..{SCHEMA}")
        doc = step(doc)
        version = doc["schema"]
    return doc


def read_json_document(path: Path) -> dict[str, Any]:
    """A JSON object from a file; unreadable or not an object is a TestbedError."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise TestbedError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise TestbedError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise TestbedError(f"{path}: not a testbed result or matrix file")
    return data


def check_document(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """The one schema check: a matrix document of MATRIX_SCHEMA as is, a result document
    upgraded to SCHEMA."""
    if doc.get("kind") == "matrix":
        if doc.get("schema") != MATRIX_SCHEMA:
            raise TestbedError(f"{where}: matrix schema {doc.get('schema')!r}, this testbed reads "
                               f"{MATRIX_SCHEMA}")
        return doc
    return upgrade(doc, where)


def read_result(path: Path) -> dict[str, Any]:
    """result.json of a run (a directory or the file) as a current-schema document."""
    path = path / RESULT_FILE if path.is_dir() else path
    doc = check_document(read_json_document(path), str(path))
    if doc.get("kind") == "matrix":
        raise TestbedError(f"{path}: a matrix file, not a run's result")
    return doc


def load_result(path: Path) -> Result:
    """The typed result of a run directory or result file, from any known schema."""
    path = path / RESULT_FILE if path.is_dir() else path
    return Result.from_json(read_result(path))


def read_matrix_document(path: Path) -> dict[str, Any]:
    """matrix.json, checked to be a matrix of MATRIX_SCHEMA."""
    doc = check_document(read_json_document(path), str(path))
    if doc.get("kind") != "matrix":
        raise TestbedError(f"{path}: not a matrix file of schema {MATRIX_SCHEMA}")
    return doc
