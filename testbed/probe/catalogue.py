"""The probe table: every probe's name, survey row, RFC clause, expectation and script.

A probe script takes a `ProbeContext` and returns an `Outcome` (pass or fail, with what it
observed); it may raise `NoMptcp` (the target does not speak MPTCP v1: not-implemented),
`Missing` (the target lacks the feature under test: not-implemented) or `Prerequisite` (an
exchange the probe relies on, not the one it judges, went wrong: error). The runner turns
anything else into an error verdict with the exception's text.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from testbed.probe.session import Link, Session

GROUPS = ("signalling", "fallback", "congestion")
# not-measurable: this target cannot show what the probe judges (a starved VM guest whose answers
# come later than the probe waits; a command target for a probe that needs the target to reply)
VERDICTS = ("pass", "fail", "not-implemented", "error", "not-measurable")


class Missing(Exception):
    """The target does not implement what the probe needs (not-implemented)."""


class Prerequisite(Exception):
    """A step the probe needs, not the one it judges, failed (error)."""


@dataclass(frozen=True)
class Outcome:
    verdict: str
    observed: str


def passed(observed: str) -> Outcome:
    return Outcome("pass", observed)


def failed(observed: str) -> Outcome:
    return Outcome("fail", observed)


def judge(ok: bool, observed: str) -> Outcome:
    return Outcome("pass" if ok else "fail", observed)


@dataclass
class ProbeContext:
    """What a probe script may use: the link and the addresses of this bed."""

    link: Link
    prober: tuple[str, str]  # the prober's two addresses (initial subflow, joins)
    target: str
    port: int
    announced: str  # the address the target announces in probes that need "announce"
    rng: random.Random
    sessions: list[Session] = field(default_factory=list)
    # starts the target as a client connecting to the prober (probes with needs="client")
    start_client: Callable[[], None] | None = None

    def client(self) -> None:
        if self.start_client is None:
            raise Missing("this target cannot be started as a client")
        self.start_client()

    def session(self, budget_s: float = 15.0) -> Session:
        session = Session(self.link, self.prober[0], self.target, self.port, rng=self.rng,
                          budget_s=budget_s)
        self.sessions.append(session)
        return session


@dataclass(frozen=True)
class Probe:
    name: str
    group: str
    survey_row: str
    rfc: str
    expected: str
    script: Callable[[ProbeContext], Outcome]
    needs: str = ""  # a target setting: "", "announce" or "client"
    packetdrill: str = ""  # the packetdrill scenario it follows, if any

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"probe {self.name}: group {self.group!r} is not one of {GROUPS}")


PROBES: dict[str, Probe] = {}


def probe(name: str, group: str, survey_row: str, rfc: str, expected: str, *,
          needs: str = "", packetdrill: str = "") -> Callable[[Callable[[ProbeContext], Outcome]],
                                                              Callable[[ProbeContext], Outcome]]:
    """Register a probe script under `name` (explicit table, filled by importing the modules
    listed in `load`)."""
    def register(script: Callable[[ProbeContext], Outcome]) -> Callable[[ProbeContext], Outcome]:
        if name in PROBES:
            raise ValueError(f"probe {name} registered twice")
        PROBES[name] = Probe(name, group, survey_row, rfc, expected, script, needs, packetdrill)
        return script
    return register


PROBE_MODULES = ("testbed.probe.probes_handshake", "testbed.probe.probes_dss",
                 "testbed.probe.probes_signals", "testbed.probe.probes_client")


def load() -> dict[str, Probe]:
    """Every probe, in catalogue order (set-up, data plane, signals)."""
    import importlib

    for module in PROBE_MODULES:
        importlib.import_module(module)
    return PROBES
