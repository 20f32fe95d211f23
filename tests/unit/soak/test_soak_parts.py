"""The soak's parts that need no network: the seeded schedule, the hash judge, the process
judge and the criteria (testbed.soak)."""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from pathlib import Path

import pytest

from testbed.endpoints.payload import PayloadSource
from testbed.errors import SpecError
from testbed.soak.criteria import evaluate, judge_process, judged_until_s, soak_document
from testbed.soak.monitor import SAMPLE_COLUMNS, ProcessSampler, ProcessSeries, describe_command
from testbed.soak.schedule import PAIRINGS, SoakSettings, chaos_timeline, soak_spec, transfer_slots
from testbed.soak.session import SoakRecord
from testbed.soak.truth import judge_received, payload_sha256


def _payload(seed: int, length: int) -> bytes:
    return bytes(PayloadSource(seed).window(0, length))


def test_the_timeline_is_seeded_and_has_every_kind_of_abuse() -> None:
    settings = SoakSettings(minutes=3, seed=7)
    events, outages = chaos_timeline(settings)
    assert (events, outages) == chaos_timeline(settings)
    assert events != chaos_timeline(SoakSettings(minutes=3, seed=8))[0]
    downs = [e["at_s"] for e in events if e.get("up") is False]
    gaps = [b - a for a, b in itertools.pairwise(downs)]
    assert gaps and all(20 <= gap <= 40 for gap in gaps)
    assert 20 <= downs[0] <= 40
    # the first outage of path A outlasts the NAT's idle timeout
    down, up = outages[0]
    assert up - down > settings.nat_idle_timeout_s
    assert {"at_s": round(down, 3), "link": "a", "up": False} in events
    assert any("set" in e for e in events)
    assert [e["active"] for e in events if "middlebox" in e][:2] == [True, False]
    spec = soak_spec(settings, events)  # a valid experiment spec, switchable stripper included
    assert len(spec.timeline) == len(events)
    assert [box.type for box in spec.middleboxes] == ["nat", "strip_options"]


def test_transfers_cycle_through_the_pairings_with_long_python_ones() -> None:
    slots = [slot for slot, _ in zip(transfer_slots(SoakSettings()), range(12), strict=False)]
    assert [(s.client_stack, s.server_stack, s.direction) for s in slots[:6]] == list(PAIRINGS)
    long_ones = [s for s in slots if s.seconds == SoakSettings().long_transfer_s]
    assert [(s.client_stack, s.server_stack) for s in long_ones] == [("python", "kernel"),
                                                                       ("kernel", "python")]
    assert all(10 <= s.seconds <= 20 for s in slots if s not in long_ones)


def test_minutes_below_two_is_a_one_line_error() -> None:
    with pytest.raises(SpecError, match=r"--minutes 1: must be 2\.\.1440"):
        SoakSettings(minutes=1).check()


@pytest.mark.parametrize(("received", "sent", "expected"), [
    (lambda p: p, 5000, "ok"),
    (lambda p: p[:3000], 5000, "truncated"),
    (lambda p: p[:2000] + b"x" + p[2001:], 5000, "corrupted"),
    (lambda p: p + b"more", 5000, "corrupted"),
    (lambda p: b"", 5000, "truncated"),
])
def test_the_hash_judge(tmp_path: Path, received, sent: int, expected: str) -> None:  # type: ignore[no-untyped-def]
    data = received(_payload(11, 5000))
    path = tmp_path / "received.bin"
    path.write_bytes(data)
    truth = judge_received(path, 11, sent)
    assert truth.integrity == expected
    assert truth.received_sha256 == hashlib.sha256(data).hexdigest()
    assert payload_sha256(11, 5000) == hashlib.sha256(_payload(11, 5000)).hexdigest()


def test_a_missing_received_file_means_nothing_arrived(tmp_path: Path) -> None:
    assert judge_received(tmp_path / "absent", 3, 0).integrity == "ok"
    assert judge_received(tmp_path / "absent", 3, 10).integrity == "truncated"


def _series(rss_at: dict[int, int], fds: int = 10) -> ProcessSeries:
    series = ProcessSeries(100, "testbed.inline", "mb_a")
    level = 0
    for age in range(0, 120):
        level = rss_at.get(age, level)
        series.samples.append((float(age), float(age), level, fds))
    return series


def test_rss_is_judged_against_the_level_at_60_s() -> None:
    steady = judge_process(_series({0: 10000, 30: 20000, 61: 21000}))  # growth before 60 s is fine
    assert steady["judged"] and steady["outside_10pct"] == 0 and steady["rss_at_60s_kib"] == 20000
    leaking = judge_process(_series({0: 20000, 90: 22100}))
    assert leaking["outside_10pct"] == 30 and leaking["worst_deviation_pct"] == 10.5
    young = ProcessSeries(5, "testbed.endpoints.kernel client", "client",
                          [(1.0, 1.0, 5000, 7), (2.0, 2.0, 5100, 9)])
    assert judge_process(young)["judged"] is False


def test_rss_is_judged_up_to_the_end_of_the_last_transfers_data_phase() -> None:
    """A python client frees its buffers once its 70 s of data are sent (the 30-minute soak
    saw -19 and -21 % in the last second): not growth. The same fall, or a growth, while the
    data still flows fails."""
    client = _series({0: 44000, 110: 35000})
    client.label, client.node = "testbed.endpoints.stack_endpoint client", "client"
    transfers = [{"started_s": 0.0, "ended_s": 119.0, "data_ended_s": 105.0},
                 {"started_s": 200.0, "ended_s": 220.0, "data_ended_s": 215.0}]  # after it died
    until = judged_until_s(client, transfers)
    assert until == 105.0
    judged = judge_process(client, until)
    assert judged["judged"] and judged["outside_10pct"] == 0 and judged["judged_until_s"] == 105.0
    assert judged["rss_kib"]["min"] == 35000  # the summary still covers its whole life
    assert judge_process(client)["outside_10pct"] == 10  # judged to its exit: the fall counts
    transfers[0]["data_ended_s"] = 112.0
    assert judge_process(client, judged_until_s(client, transfers))["outside_10pct"] == 3
    growing = _series({0: 44000, 100: 49000})
    assert judge_process(growing, 105.0)["worst_deviation_pct"] == 11.36
    soak = _series({0: 70000, 118: 90000})  # lived through no transfer's end: all judged
    assert judged_until_s(soak, []) is None
    assert judge_process(soak, None)["outside_10pct"] == 2


def test_the_sampler_streams_samples_to_its_file_and_keeps_none(tmp_path: Path) -> None:
    sampler = ProcessSampler({}, tmp_path / "processes.csv")
    sampler.start()
    sampler.stop()
    sampler.sample_once()  # after stop: nothing written, nothing kept
    sampler = ProcessSampler({}, tmp_path / "processes.csv", interval_s=0.05)
    sampler.start()
    time.sleep(0.3)
    sampler.stop()
    assert all(not series.samples for series in sampler.series.values())
    (own,) = sampler.snapshot()
    assert own.label == "testbed soak" and own.pid == os.getpid() and len(own.samples) >= 3
    lines = (tmp_path / "processes.csv").read_text().splitlines()
    assert lines[0] == ",".join(SAMPLE_COLUMNS) and len(lines) == len(own.samples) + 1
    assert all(rss > 1000 and fds > 0 for _t, _age, rss, fds in own.samples)


def _record(processes: list[ProcessSeries], **census_after: object) -> SoakRecord:
    record = SoakRecord(SoakSettings(minutes=2), "abcdef", {}, [(30.0, 36.0)])
    record.transfers = [{
        "index": 0, "pairing": "python->kernel", "started_s": 0.0, "ended_s": 115.0,
        "verdict": "truncated", "died": {}, "nat": {"before": {"expired": 0}, "after": {"expired": 1}},
        "truth": {"integrity": "truncated"}}]
    record.timeline = [{"at_s": 30.0, "link": "a", "up": False}, {"at_s": 20.0, "link": "b",
                       "params": {}}, {"at_s": 10.0, "middlebox": "mb_b.0", "active": True},
                       {"at_s": 15.0, "middlebox": "mb_b.0", "active": False}]
    record.processes = processes
    record.bumps_alive_at_end = {"mb_a": True, "mb_b": True}
    empty = {"namespaces": [], "interfaces": [], "nft_tables": [], "processes": [], "soak_fds": 6}
    record.census_before = dict(empty)
    record.census_after = {**empty, **census_after}
    return record


def test_every_criterion_passes_on_a_clean_record_and_fails_by_name() -> None:
    document = soak_document(_record([_series({0: 20000})]))
    assert document["passed"], [c for c in document["criteria"] if not c["passed"]]
    assert document["format"] == "testbed-soak" and document["version"] == 1
    record = _record([_series({0: 20000, 90: 30000}, fds=10)], namespaces=["tb-abcdef-client"],
                     soak_fds=9)
    record.transfers[0]["verdict"] = "ok"
    record.transfers[0]["died"] = {"client": "ended by signal 9"}
    record.bumps_alive_at_end["mb_b"] = False
    failed = {c["name"]: c["problems"] for c in evaluate(record, [judge_process(s) for s in
                                                                  record.processes])
              if not c["passed"]}
    assert set(failed) == {"verdicts", "processes", "rss", "fds", "leaks"}
    assert "printed ok, hashes say truncated" in failed["verdicts"][0]
    assert failed["leaks"] == ["namespace tb-abcdef-client"]


def test_the_soak_process_descriptors_are_judged_by_the_census_only() -> None:
    busy = _series({0: 20000}, fds=20)
    busy.label = "testbed soak"
    busy.samples[-20:] = [(t, a, r, 24) for t, a, r, _ in busy.samples[-20:]]  # endpoint pipes
    record = _record([busy])
    assert next(c for c in evaluate(record, [judge_process(busy)]) if c["name"] == "fds")["passed"]
    record.census_after["soak_fds"] = 7
    problems = next(c for c in evaluate(record, []) if c["name"] == "fds")["problems"]
    assert problems == ["the soak process: 6 fds before the build, 7 after teardown"]


def test_the_abuse_criterion_names_what_did_not_happen() -> None:
    record = _record([_series({0: 20000})])
    record.transfers[0]["nat"]["after"]["expired"] = 0
    record.timeline = [e for e in record.timeline if "middlebox" not in e]
    problems = next(c for c in evaluate(record, []) if c["name"] == "abuse")["problems"]
    assert problems == ["the stripper was never switched on during a transfer",
                        "the stripper was never switched off during a transfer",
                        "no NAT mapping expired during a transfer that had a path-A outage"]


def test_python_programs_are_labelled_by_module_and_role() -> None:
    assert describe_command(["/usr/bin/python3", "-m", "testbed.inline", "--left", "x"]) == \
        "testbed.inline"
    assert describe_command(["/v/bin/python", "-m", "testbed.endpoints.kernel", "server", "--mptcp"]) \
        == "testbed.endpoints.kernel server"
    assert describe_command(["bash", "--norc"]) is None
