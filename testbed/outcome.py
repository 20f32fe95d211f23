"""Outcome classes of a connection (DESIGN.md), decided from evidence and returned with it.

Evidence: the two ends' reports (byte counts, SHA-256 of what each end sent or received, the
payload seed, errors, whether MPTCP was seen and still in use at the end, per-subflow bytes),
the kernel's MPTcpExt/Tcp counter deltas of each endpoint namespace, and the bundled Python
stack's own per-connection counters of a python end (``EndpointReport.stack_counters``). The
stack names its counters like the kernel's MPTcpExt ones (without the prefix), so both feed the
same rules under the same names; an evidence line names the end and says "bundled stack".

The class is the first rule of RULES that holds, in this order, because a later class must
never hide an earlier one. What the application received is the other axis, integrity
(testbed.integrity: ok, alg-edited, truncated, corrupted), decided by the oracle; its
statement ends the evidence.

1. ``mp-fail``: a DSS checksum failed (DataCsumErr, MP_FAIL sent or received) — whatever
   happened next (fallback, reset, a stall) is added to the evidence.
2. ``reset`` / ``stalled``: the transfer did not finish (an end saw a reset, a refusal or
   another error; or no progress until the I/O timeout, or not all bytes, or none at all).
3. ``fallback-syn``: MPTCP was never in use (SYN/ACK or third ACK without MP_CAPABLE, a plain
   TCP end, or no end ever saw MPTCP in use and no counter shows a completed MP_CAPABLE
   handshake).
4. ``fallback-infinite-map``: MPTCP was negotiated, then the connection fell back to TCP
   (data without a DSS mapping, an infinite mapping, a first ACK without DSS; or the counters
   show MP_CAPABLE on both the SYN/ACK and the third ACK, yet no end used MPTCP at the end).
5. ``subflow-rejected``: MPTCP end to end but fewer subflows carried data than expected and a
   join was tried, refused or reset.
6. ``mptcp``.

Every rule that holds contributes its reasons, so the evidence of a `reset` still says that
the connection had fallen back first, and so on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from testbed.endpoints.payload import expected_digest
from testbed.endpoints.report import ConnectionRecord, EndpointReport
from testbed.integrity import Verdict
from testbed.mptcp.counters import KERNEL_COUNTERS

KERNEL_PREFIX = "MPTcpExt"

# What each counter means when it moves; used to word the evidence.
COUNTER_MEANINGS: dict[str, str] = {
    "MPTcpExtMPCapableSYNACKRX": "SYN/ACK with MP_CAPABLE received",
    "MPTcpExtMPCapableACKRX": "third ACK with MP_CAPABLE received",
    "MPTcpExtMPCapableFallbackSYNACK": "SYN/ACK without MP_CAPABLE: plain TCP",
    "MPTcpExtMPCapableFallbackACK": "third ACK without MP_CAPABLE: plain TCP",
    "MPTcpExtMPCapableSYNTXDrop": "SYN retried without MP_CAPABLE after retransmissions",
    "MPTcpExtBlackhole": "MPTCP SYNs unanswered: MPTCP blackhole assumed",
    "MPTcpExtMPCapableDataFallback": "first packet after the handshake without DSS: fell back",
    "MPTcpExtDssFallback": "DSS missing or bad (data unmapped, or ACKed without data ACK): fell back",
    "MPTcpExtDSSCorruptionFallback": "mapping corrupted: fell back to TCP",
    "MPTcpExtDSSCorruptionReset": "mapping corrupted: subflow reset",
    "MPTcpExtInfiniteMapTx": "infinite mapping sent",
    "MPTcpExtInfiniteMapRx": "infinite mapping received",
    "MPTcpExtDataCsumErr": "DSS checksum failed",
    "MPTcpExtMPFailTx": "MP_FAIL sent",
    "MPTcpExtMPFailRx": "MP_FAIL received",
    "MPTcpExtMPJoinSynTx": "MP_JOIN SYN sent",
    "MPTcpExtMPJoinSynRx": "MP_JOIN SYN received",
    "MPTcpExtMPJoinAckRx": "MP_JOIN third ACK received",
    "MPTcpExtMPJoinRejected": "MP_JOIN refused",
    "MPTcpExtMPJoinNoTokenFound": "MP_JOIN with an unknown token",
    "MPTcpExtMPJoinSynAckHMacFailure": "MP_JOIN SYN/ACK HMAC wrong",
    "MPTcpExtMPJoinAckHMacFailure": "MP_JOIN ACK HMAC wrong",
    "MPTcpExtMPRstTx": "MP_TCPRST sent (subflow reset)",
    "MPTcpExtMPRstRx": "MP_TCPRST received (subflow reset)",
    "MPTcpExtMPFastcloseTx": "MP_FASTCLOSE sent",
    "MPTcpExtMPFastcloseRx": "MP_FASTCLOSE received",
    "MPTcpExtFallbackFailed": "fallback needed but impossible",
    "TcpInCsumErrors": "TCP segments with a bad checksum received",
    # the bundled stack's own counters (testbed.mptcp.counters.OWN_COUNTERS)
    "SubflowResetMiddlebox": "subflow reset with MP_TCPRST reason 6 (middlebox interference)",
}

SYN_FALLBACK = ("MPTcpExtMPCapableFallbackSYNACK", "MPTcpExtMPCapableFallbackACK",
                "MPTcpExtMPCapableSYNTXDrop", "MPTcpExtBlackhole")
LATE_FALLBACK = ("MPTcpExtMPCapableDataFallback", "MPTcpExtDssFallback",
                 "MPTcpExtDSSCorruptionFallback", "MPTcpExtInfiniteMapTx", "MPTcpExtInfiniteMapRx")
CHECKSUM_FAILURE = ("MPTcpExtDataCsumErr", "MPTcpExtMPFailTx", "MPTcpExtMPFailRx")
JOIN_TROUBLE = ("MPTcpExtMPJoinRejected", "MPTcpExtMPJoinNoTokenFound",
                "MPTcpExtMPJoinSynAckHMacFailure", "MPTcpExtMPJoinAckHMacFailure",
                "MPTcpExtMPRstTx", "MPTcpExtMPRstRx", "MPTcpExtDSSCorruptionReset",
                "SubflowResetMiddlebox")
JOIN_TRIED = ("MPTcpExtMPJoinSynTx", "MPTcpExtMPJoinSynRx", *JOIN_TROUBLE)
# MP_CAPABLE seen on the SYN/ACK (client side) and on the third ACK (server side): both moving
# proves the MPTCP handshake completed, so a later plain-TCP state is a fallback after it.
HANDSHAKE_DONE = ("MPTcpExtMPCapableSYNACKRX", "MPTcpExtMPCapableACKRX")
STACK_SOURCE = "(bundled stack)"


def stack_counter_name(name: str) -> str:
    """The kernel's name for a bundled-stack counter: the stack drops the MPTcpExt prefix of
    the counters the kernel also has; its own counters (no kernel counterpart) keep their name."""
    return KERNEL_PREFIX + name if name in KERNEL_COUNTERS else name


def evidence_counters(record: ConnectionRecord,
                      kernel: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Kernel counter deltas per namespace plus, for each python end, its stack's counters
    under the kernel's names, keyed '<role> (bundled stack)' so evidence says whose they are."""
    merged = {host: dict(per_host) for host, per_host in kernel.items()}
    for end in (record.client, record.server):
        if end.stack_counters:
            merged[f"{end.role} {STACK_SOURCE}"] = {
                stack_counter_name(name): value for name, value in end.stack_counters.items()}
    return merged


@dataclass(frozen=True)
class Facts:
    """Everything the rules look at, computed once per connection."""

    record: ConnectionRecord
    # namespace (kernel deltas) or '<role> (bundled stack)' (a python end's own) -> counter -> value
    counters: Mapping[str, Mapping[str, int]]
    expected_subflows: int
    sender: EndpointReport
    receiver: EndpointReport
    prefix_intact: bool | None  # receiver's bytes = the stream's first bytes (None: unknown)

    def moved(self, names: tuple[str, ...]) -> list[str]:
        """'host: Counter +N (meaning)' for each named counter that moved in any namespace."""
        found = []
        for host, per_host in sorted(self.counters.items()):
            for name in names:
                delta = per_host.get(name, 0)
                if delta:
                    meaning = COUNTER_MEANINGS.get(name)
                    found.append(f"{host}: {name} {delta:+d}" + (f" ({meaning})" if meaning else ""))
        return found

    def total(self, name: str) -> int:
        return sum(per_host.get(name, 0) for per_host in self.counters.values())

    @property
    def handshake_done(self) -> bool:
        """MP_CAPABLE arrived on the SYN/ACK and on the third ACK (counters of either source)."""
        return all(self.total(name) > 0 for name in HANDSHAKE_DONE)

    def errors_of(self, *kinds: str) -> list[str]:
        return [f"{r.role} {r.error_kind}: {r.error}" for r in (self.record.client, self.record.server)
                if r.error_kind in kinds]

    @property
    def carrying(self) -> list[Any]:
        return [s for s in self.record.subflows if s.bytes_acked > 0]


def delivered_prefix_intact(record: ConnectionRecord) -> bool | None:
    """Whether the receiver got exactly the first `bytes` bytes of the sender's stream.

    The payload is a pure function of the seed (testbed.endpoints.payload), so the hash of any
    prefix can be recomputed; None when the seed is unknown (the sender failed early).
    """
    sender, receiver = ((record.client, record.server) if record.direction != "download"
                        else (record.server, record.client))
    if receiver.bytes > sender.bytes:
        return False
    if receiver.bytes == sender.bytes:
        return receiver.sha256 == sender.sha256
    seed = record.client.seed
    if seed is None:
        return None
    return expected_digest(seed, receiver.bytes) == receiver.sha256


def _mp_fail(facts: Facts) -> list[str]:
    return facts.moved(CHECKSUM_FAILURE)


def _reset(facts: Facts) -> list[str]:
    """Every error but a timeout ends the transfer as a failure: reset, refusal, and the rarer
    protocol/OS/interrupted ones (their text says which)."""
    return facts.errors_of("reset", "refused", "protocol", "os", "interrupted",
                           "mptcp-unavailable")


def _stalled(facts: Facts) -> list[str]:
    reasons = facts.errors_of("timeout")
    if facts.record.bytes == 0:
        reasons.append("no payload byte delivered")
    elif facts.receiver.bytes < facts.sender.bytes and not facts.record.errors:
        reasons.append(f"{facts.receiver.role} got only {facts.receiver.bytes} of the "
                       f"{facts.sender.bytes} bytes sent")
    return reasons


def _fallback_syn(facts: Facts) -> list[str]:
    client, server = facts.record.client, facts.record.server
    reasons = facts.moved(SYN_FALLBACK)
    plain = [r.role for r in (client, server) if not r.mptcp_requested]
    if plain:
        reasons.append(f"plain TCP endpoint(s): {', '.join(plain)}")
    if not client.mptcp_seen and not server.mptcp_seen and not facts.handshake_done:
        reasons.append("neither end ever saw MPTCP in use (MPTCP_INFO)")
    return reasons


def _fallback_infinite_map(facts: Facts) -> list[str]:
    reasons = facts.moved(LATE_FALLBACK)
    ends = [r.role for r in (facts.record.client, facts.record.server)
            if r.mptcp_seen and not r.mptcp_used]
    if ends:
        reasons.append(f"MPTCP in use, then fallen back at the end: {', '.join(ends)}")
    client, server = facts.record.client, facts.record.server
    if (facts.handshake_done and not client.mptcp_used and not server.mptcp_used
            and not (client.mptcp_seen or server.mptcp_seen)):
        # a fallback before the first sample: the handshake counters still prove MPTCP
        reasons.append("MP_CAPABLE handshake completed (" + "; ".join(facts.moved(HANDSHAKE_DONE))
                       + "), yet neither end used MPTCP at the end: fell back after the handshake")
    return reasons


def _subflow_rejected(facts: Facts) -> list[str]:
    if not facts.record.mptcp_used or len(facts.carrying) >= facts.expected_subflows:
        return []
    trouble = facts.moved(JOIN_TROUBLE)
    tried = facts.moved(JOIN_TRIED)
    closed = [f"subflow {s.local} -> {s.remote} closed before the end"
              for s in facts.record.subflows if not s.open_at_end]
    if not (trouble or tried or closed):
        return []
    return [f"{len(facts.carrying)} of {facts.expected_subflows} expected subflows carried data",
            *tried, *(t for t in trouble if t not in tried), *closed]


def _mptcp(facts: Facts) -> list[str]:
    return [f"MPTCP end to end, {len(facts.carrying)} subflow(s) carried data: "
            + ", ".join(f"{s.local}->{s.remote} {s.bytes_acked} B" for s in facts.carrying)]


Rule = Callable[[Facts], list[str]]
RULES: tuple[tuple[str, Rule], ...] = (
    ("mp-fail", _mp_fail),
    ("reset", _reset),
    ("stalled", _stalled),
    ("fallback-syn", _fallback_syn),
    ("fallback-infinite-map", _fallback_infinite_map),
    ("subflow-rejected", _subflow_rejected),
    ("mptcp", _mptcp),
)
OUTCOMES: tuple[str, ...] = tuple(name for name, _rule in RULES)


def gather_facts(record: ConnectionRecord, counters: Mapping[str, Mapping[str, int]],
                 expected_subflows: int) -> Facts:
    sender, receiver = ((record.client, record.server) if record.direction != "download"
                        else (record.server, record.client))
    prefix = True if record.integrity == "ok" else delivered_prefix_intact(record)
    return Facts(record, evidence_counters(record, counters), expected_subflows, sender, receiver,
                 prefix)


def classify(record: ConnectionRecord, counters: Mapping[str, Mapping[str, int]],
             expected_subflows: int, integrity: Verdict | None = None) -> tuple[str, list[str]]:
    """(outcome class, evidence): the first rule of RULES that holds; its reasons come first,
    then those of every later rule that also holds, then integrity and checksum facts.

    `counters` are the kernel's deltas per endpoint namespace; a python end's stack counters
    are read from its report in `record`."""
    facts = gather_facts(record, counters, expected_subflows)
    outcome = ""
    evidence: list[str] = []
    for name, rule in RULES:
        reasons = rule(facts)
        if not reasons or (name == "mptcp" and outcome):
            continue
        if not outcome:
            outcome = name
            evidence.extend(reasons)
        else:
            evidence.extend(f"also {name}: {reason}" for reason in reasons)
    evidence.append(f"integrity {integrity.integrity}: {integrity.description}" if integrity
                    else _integrity_statement(facts))
    evidence.extend(facts.moved(("TcpInCsumErrors",)))
    return outcome, evidence


def _integrity_statement(facts: Facts) -> str:
    receiver, sender = facts.receiver, facts.sender
    if facts.record.integrity == "ok":
        return f"integrity ok: {receiver.role} got all {receiver.bytes} bytes, SHA-256 equal"
    if facts.prefix_intact:
        return (f"no corrupted byte delivered: {receiver.role}'s {receiver.bytes} bytes are the "
                f"stream's first {receiver.bytes} of {sender.bytes} (prefix SHA-256 recomputed)")
    if facts.prefix_intact is None:
        return "delivered bytes could not be checked (payload seed unknown)"
    return "corrupted bytes were delivered to the application"
