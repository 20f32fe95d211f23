"""The three IETF 87 survey tables, each cell decided from evidence and linked to it.

A row is a question of the 2013 questionnaire; `answer(evidence)` reads the target's experiment
results (testbed.survey.experiments), the capture facts (testbed.survey.wire_facts) and the
prober's verdicts for that row (probes.json, matched on the probe's group and survey_row), and
returns a Cell: a short text and the files it comes from. Without evidence a cell says "not
measured" and why; it never falls back on what an implementation is documented to do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testbed.survey.experiments import HANDOVER_AT_S, ExperimentRecord
from testbed.survey.wire_facts import WireFacts

Link = tuple[str, str]  # (label, path relative to the survey's DIR)


@dataclass
class Cell:
    text: str
    links: list[Link] = field(default_factory=list)


@dataclass
class Evidence:
    """Everything measured for one target."""

    target: str
    records: dict[str, ExperimentRecord]
    wire: dict[str, WireFacts]
    probes: list[dict[str, Any]] | None  # None: no prober output
    probes_note: str  # where the probes came from, or why there are none
    probes_link: str | None


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _result_link(record: ExperimentRecord) -> Link:
    return (record.name, f"{record.directory}/result.json")


def _connection(evidence: Evidence, name: str) -> tuple[dict[str, Any] | None, Cell | None]:
    """The experiment's connection, or the cell saying why there is none."""
    record = evidence.records.get(name)
    if record is None:
        return None, Cell(f"not measured: experiment {name} not run (--experiments)")
    if record.status == "not-run":
        return None, Cell(f"not measured: {record.reason}")
    if record.status == "error" or record.result is None:
        return None, Cell(f"not measured: {name} failed: {record.reason}",
                          [(name, record.directory)] if record.directory else [])
    return record.result["connections"][0], None


def _carrying(connection: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in connection["subflows"] if s["bytes"] > 0]


def _counter(connection: dict[str, Any], name: str) -> int:
    """An MPTcpExt counter moved in either namespace, or the python stack's own counter."""
    total = sum(c.get(f"MPTcpExt{name}", 0) for c in connection["counters"].values())
    total += sum((c or {}).get(name, 0) for c in connection.get("stack_counters", {}).values())
    return total


def _outcome_text(connection: dict[str, Any]) -> str:
    carrying = len(_carrying(connection))
    return (f"{connection['outcome']}, {carrying} subflow{'s' if carrying != 1 else ''} carried data, "
            f"integrity {connection['integrity']}")


def _sides(counts: dict[str, int]) -> str:
    present = [f"{side} {count}" for side, count in counts.items() if count]
    return ", ".join(present) if present else "none seen"


def _wire(evidence: Evidence, name: str) -> tuple[WireFacts | None, Cell | None]:
    _connection_doc, missing = _connection(evidence, name)
    if missing is not None:
        return None, missing
    facts = evidence.wire.get(name)
    if facts is None:
        return None, Cell(f"not measured: no capture of {name}",
                          [_result_link(evidence.records[name])])
    return facts, None


def _with_link(cell: Cell, evidence: Evidence, name: str, capture: bool = False) -> Cell:
    record = evidence.records[name]
    cell.links.append(_result_link(record))
    if capture:
        cell.links.append((f"{name} capture", f"{record.directory}/capture.pcap"))
    return cell


# --- signalling ---------------------------------------------------------------------------------
def mp_capable(ev: Evidence) -> Cell:
    connection, missing = _connection(ev, "baseline")
    if missing:
        return missing
    used = connection["mptcp"] and connection["outcome"] != "fallback-syn"
    text = ("yes: MPTCP v1 end to end" if used else "no") + f" ({_outcome_text(connection)})"
    return _with_link(Cell(text), ev, "baseline")


def mp_join(ev: Evidence) -> Cell:
    connection, missing = _connection(ev, "baseline")
    if missing:
        return missing
    carrying = len(_carrying(connection))
    text = (f"yes: {carrying} subflows carried data" if carrying > 1
            else f"no join carried data ({_outcome_text(connection)})")
    counts = ", ".join(f"{name} {_counter(connection, name)}" for name in
                       ("MPJoinSynTx", "MPJoinSynAckRx", "MPJoinAckRx") if _counter(connection, name))
    return _with_link(Cell(text + (f" ({counts})" if counts else "")), ev, "baseline")


def join_initiator(ev: Evidence) -> Cell:
    facts, missing = _wire(ev, "baseline")
    if missing:
        return missing
    assert facts is not None
    sides = [side for side in ("client", "server") if facts.join_syn[side]]
    text = " and ".join(sides) if sides else "nobody (no MP_JOIN SYN on the wire)"
    return _with_link(Cell(f"{text} (MP_JOIN SYNs: {_sides(dict(facts.join_syn))}; the client has "
                           f"the extra paths)"), ev, "baseline", capture=True)


def subflow_count(ev: Evidence) -> Cell:
    connection, missing = _connection(ev, "subflow_limit")
    if missing:
        return missing
    opened = len(connection["subflows"])
    carrying = len(_carrying(connection))
    return _with_link(Cell(f"{opened} subflows seen, {carrying} carried data, with 4 client paths "
                           f"and limits of 8 (the topology's limit, not necessarily the "
                           f"implementation's)"), ev, "subflow_limit")


def _size_row(counter_name: str, what: str) -> Callable[[Evidence], Cell]:
    def answer(ev: Evidence) -> Cell:
        facts, missing = _wire(ev, "baseline")
        if missing:
            return missing
        assert facts is not None
        counter = getattr(facts, counter_name)
        parts = []
        for side in ("client", "server"):
            sizes = facts.sizes(counter, side)
            counts = {size: counter[(side, size)] for size in sizes}
            parts.append(f"{side}: " + (", ".join(f"{size} B ({count})" for size, count in counts.items())
                                        if counts else f"no {what}"))
        return _with_link(Cell("; ".join(parts)), ev, "baseline", capture=True)
    return answer


def data_fin(ev: Evidence) -> Cell:
    facts, missing = _wire(ev, "baseline")
    if missing:
        return missing
    assert facts is not None
    return _with_link(Cell(f"DSS with DATA_FIN: {_sides(dict(facts.data_fin))}"), ev, "baseline",
                      capture=True)


def checksum(ev: Evidence) -> Cell:
    connection, missing = _connection(ev, "checksum")
    if missing:
        return missing
    facts = ev.wire.get("checksum")
    info = connection["mptcp_info"].get("client") or connection["mptcp_info"].get("server") or {}
    csum = info.get("csum_enabled")
    on_wire = _sides(dict(facts.checksum)) if facts is not None else "no capture"
    text = (f"mappings with a checksum: {on_wire}"
            + (f"; mptcp_info csum_enabled={csum}" if csum is not None else "")
            + f" ({_outcome_text(connection)})")
    return _with_link(Cell(text), ev, "checksum", capture=facts is not None)


def _signal_seen(counter_name: str, what: str) -> Callable[[Evidence], Cell]:
    def answer(ev: Evidence) -> Cell:
        facts, missing = _wire(ev, "baseline")
        if missing:
            return missing
        assert facts is not None
        seen = _sides(dict(getattr(facts, counter_name)))
        return _with_link(Cell(f"{what} in the baseline: {seen} (no experiment provokes it: the "
                               f"server is single-homed)"), ev, "baseline", capture=True)
    return answer


def probes_only(_ev: Evidence) -> Cell:
    return Cell("no experiment: probes only")


# --- fallback -----------------------------------------------------------------------------------
def _fallback(name: str) -> Callable[[Evidence], Cell]:
    def answer(ev: Evidence) -> Cell:
        connection, missing = _connection(ev, name)
        if missing:
            return missing
        extra = []
        for counter in ("InfiniteMapTx", "InfiniteMapRx", "MPFailTx", "MPFailRx", "DSSCorruptionFallback",
                        "DssFallback", "MPCapableFallbackACK", "MPCapableFallbackSYNACK", "MPJoinRejected"):
            if _counter(connection, counter):
                extra.append(f"{counter} {_counter(connection, counter)}")
        text = _outcome_text(connection) + (f"; {', '.join(extra)}" if extra else "")
        return _with_link(Cell(text), ev, name)
    return answer


def data_ack_removed(_ev: Evidence) -> Cell:
    return Cell("not measured by experiment: no catalogue middlebox strips the data ACK alone")


# --- congestion control -------------------------------------------------------------------------
def _shares(connection: dict[str, Any]) -> str:
    total = sum(s["bytes"] for s in connection["subflows"]) or 1
    return ", ".join(f"{s['local'].split(':')[0].split('%')[0]} {100 * s['bytes'] / total:.0f} %"
                     for s in connection["subflows"])


def sharing(ev: Evidence) -> Cell:
    connection, missing = _connection(ev, "baseline")
    if missing:
        return missing
    return _with_link(Cell(f"two equal paths: {_shares(connection)} of the bytes"), ev, "baseline")


def loss_sharing(ev: Evidence) -> Cell:
    connection, missing = _connection(ev, "loss_sharing")
    if missing:
        return missing
    return _with_link(Cell(f"3 % loss on path a (10.0.1.1): {_shares(connection)} of the bytes; "
                           f"{connection['goodput_mbps']:.1f} Mbit/s"), ev, "loss_sharing")


def handover(ev: Evidence) -> Cell:
    connection, missing = _connection(ev, "handover")
    if missing:
        return missing
    if not connection["bytes"]:  # nothing flowed before the outage either: no handover to judge
        return _with_link(Cell(f"not measured: no byte got through ({_outcome_text(connection)}; "
                               f"{'; '.join(connection.get('problems', [])[:1])})"), ev, "handover")
    survived = connection["outcome"] not in ("reset", "stalled") and connection["integrity"] == "ok"
    text = ("continues on path b" if survived else "does not survive") + \
        f" after path a goes down at {HANDOVER_AT_S:g} s: {_shares(connection)}; {_outcome_text(connection)}"
    return _with_link(Cell(text), ev, "handover")


def coupled_cc(ev: Evidence) -> Cell:
    text = ("not identified from behaviour: it needs paths sharing one bottleneck, which no "
            "topology has yet")
    connection, _missing = _connection(ev, "baseline")
    if connection is not None and connection["client_stack"] == "python":
        text += "; configured: the bundled stack's congestion_control setting (default reno)"
    return Cell(text)


def other_cc(ev: Evidence) -> Cell:
    record = ev.records.get("baseline")
    connection, missing = _connection(ev, "baseline")
    if missing or record is None or record.result is None:
        return missing or Cell("not measured")
    if connection["client_stack"] == "python":
        return _with_link(Cell("per-subflow CC of the bundled stack (configuration: reno by default)"),
                          ev, "baseline")
    congestion = record.result["environment"].get("tcp_congestion_control", {})
    names = sorted(set(congestion.values())) if isinstance(congestion, dict) else [str(congestion)]
    return _with_link(Cell(f"each subflow runs the namespace's TCP CC: {', '.join(names) or '?'}"),
                      ev, "baseline")


def backup(ev: Evidence) -> Cell:
    connection, missing = _connection(ev, "backup")
    if missing:
        return missing
    return _with_link(Cell(f"10.0.2.1 marked backup: {_shares(connection)} of the bytes; "
                           f"{_outcome_text(connection)}"), ev, "backup")


@dataclass(frozen=True)
class Row:
    key: str  # matched against a probe's survey_row
    label: str
    answer: Callable[[Evidence], Cell]


TABLES: dict[str, tuple[Row, ...]] = {
    "signalling": (
        Row("MP_CAPABLE", "MP_CAPABLE", mp_capable),
        Row("MP_JOIN", "MP_JOIN", mp_join),
        Row("JOIN_INITIATOR", "Who initiates MP_JOIN", join_initiator),
        Row("SUBFLOWS", "Number of subflows", subflow_count),
        Row("DATA_ACK", "DSS data ACK size", _size_row("data_ack", "data ACK")),
        Row("DSN", "DSS data sequence number size", _size_row("dsn", "mapping")),
        Row("DATA_FIN", "DATA_FIN", data_fin),
        Row("CHECKSUM", "DSS checksum", checksum),
        Row("ADD_ADDR", "ADD_ADDR", _signal_seen("add_addr", "ADD_ADDR")),
        Row("REMOVE_ADDR", "REMOVE_ADDR", _signal_seen("remove_addr", "REMOVE_ADDR")),
        Row("MP_PRIO", "MP_PRIO", _signal_seen("mp_prio", "MP_PRIO")),
        Row("FAST_CLOSE", "MP_FASTCLOSE", probes_only),
        Row("MP_TCPRST", "MP_TCPRST", probes_only),
    ),
    "fallback": (
        Row("MP_CAPABLE", "MP_CAPABLE removed (SYN)", _fallback("fallback_mp_capable")),
        Row("MP_JOIN", "MP_JOIN removed", _fallback("fallback_mp_join")),
        Row("DSS", "DSS removed", _fallback("fallback_dss")),
        Row("DSS_DATA", "DSS removed from data segments", _fallback("fallback_dss_data")),
        Row("DATA_ACK", "DATA_ACK removed", data_ack_removed),
        Row("CHECKSUM", "Checksum failure", _fallback("fallback_checksum")),
        Row("INFINITE_MAPPING", "Infinite mapping (options stripped after data)",
            _fallback("fallback_after_data")),
    ),
    "congestion": (
        Row("SHARING", "How traffic is shared", sharing),
        Row("SHARING_LOSS", "Sharing with loss on one path", loss_sharing),
        Row("HANDOVER", "Handover", handover),
        Row("COUPLED_CC", "Coupled congestion control", coupled_cc),
        Row("OTHER_CC", "Other congestion control", other_cc),
        Row("BACKUP", "MP_PRIO and backup", backup),
    ),
}
TABLE_TITLES = {"signalling": "Signalling", "fallback": "Fallback", "congestion": "Congestion control"}


def probe_cell(evidence: Evidence, group: str, row_key: str) -> Cell | None:
    """The verdicts of the probes for this row ("prober not available" without any)."""
    if evidence.probes is None:
        return Cell(f"probes: {evidence.probes_note}")
    matching = [p for p in evidence.probes
                if p.get("group") == group and _key(str(p.get("survey_row", ""))) == _key(row_key)]
    if not matching:
        return None
    return _verdicts(matching, evidence)


def _verdicts(probes: list[dict[str, Any]], evidence: Evidence) -> Cell:
    counts: dict[str, int] = {}
    for probe in probes:
        counts[str(probe.get("verdict"))] = counts.get(str(probe.get("verdict")), 0) + 1
    failing = [str(p.get("name")) for p in probes if p.get("verdict") in ("fail", "error")]
    text = "probes: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    if failing:
        text += f" ({', '.join(failing[:4])}{', ...' if len(failing) > 4 else ''})"
    return Cell(text, [("probes", evidence.probes_link)] if evidence.probes_link else [])


def unmatched_probes(evidence: Evidence, group: str) -> Cell | None:
    """Probes of a group whose survey_row is none of the table's rows."""
    if evidence.probes is None:
        return None
    keys = {_key(row.key) for row in TABLES[group]}
    rest = [p for p in evidence.probes
            if p.get("group") == group and _key(str(p.get("survey_row", ""))) not in keys]
    return _verdicts(rest, evidence) if rest else None


def decide(evidence: Evidence, group: str, row: Row) -> Cell:
    """The cell of `row` for one target: the experiment's answer, then the probes' verdicts."""
    cell = row.answer(evidence)
    probes = probe_cell(evidence, group, row.key)
    if probes is None:
        return cell
    if cell.text == "no experiment: probes only":
        return probes
    return Cell(f"{cell.text}; {probes.text}", cell.links + probes.links)
