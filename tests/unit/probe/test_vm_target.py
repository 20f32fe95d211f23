"""The plumbing of `--target kernel@VERSION` without a VM: the launcher's command line, and the
file control channel between the host (GuestControl) and the guest target (serve)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from testbed.endpoints.kernel import StopRequest
from testbed.probe.bed import ProbeBed, ProbeError
from testbed.probe.guest_target import GuestTarget, serve
from testbed.probe.vm_target import GuestControl, launch_argv, launch_env, vm_selector


def test_selector_and_launcher_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert vm_selector("kernel@6.12") == "6.12" and vm_selector("kernel") is None
    assert vm_selector("python") is None
    argv = launch_argv("6.1", tmp_path, "10.0.100.3", "10.0.100.2", 5201, "10.0.1.1")
    assert argv[1:5] == ["-m", "testbed.endpoints.vm_kernel", "--kernel", "6.1"]
    guest = argv[argv.index("--") + 1:]
    assert guest[1:3] == ["-m", "testbed.probe.guest_target"]
    assert guest[3] == str(tmp_path / "control") and "--client-to" in guest
    monkeypatch.setenv("TESTBED_VM_POOL", "/x")  # a matrix's pool is not the probe run's
    assert "TESTBED_VM_POOL" not in launch_env()
    bed = ProbeBed("kernel@6.1")
    assert bed.kernel_target and bed.vm_kernel == "6.1" and not ProbeBed("python").kernel_target


class _Fake(GuestTarget):
    def setting(self, setting: str) -> list[str]:
        return [] if setting in ("", "announce", "client") else [f"bad {setting}"]


def test_control_channel_round_trip(tmp_path: Path) -> None:
    stop = StopRequest()
    server = threading.Thread(target=serve, args=(tmp_path, _Fake("10.0.100.3", "10.0.1.1"), stop),
                              daemon=True)
    server.start()
    try:
        control = GuestControl(tmp_path)
        counters = control.ask("counters", timeout_s=5)["counters"]
        assert counters and all(name.startswith("MPTcpExt") for name in counters)
        assert control.ask("setting", setting="announce", timeout_s=5)["problems"] == []
        assert control.ask("setting", setting="zz", timeout_s=5)["problems"] == ["bad zz"]
        with pytest.raises(ProbeError, match="refused its control request 'nope'"):
            control.ask("nope", timeout_s=5)
        assert not list(tmp_path.glob("*.json"))  # every request answered and collected
    finally:
        stop.reason = "test over"
        server.join(timeout=5)


def test_control_without_a_guest_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="did not answer its control request 'counters'"):
        GuestControl(tmp_path).ask("counters", timeout_s=0.2)
    with pytest.raises(ProbeError, match="its VM stopped"):
        GuestControl(tmp_path, alive=lambda: False).ask("counters", timeout_s=5)


def test_a_fail_stands_only_when_the_guest_kept_time() -> None:
    from testbed.probe.run import LATE_ANSWER_S, slow_guest_verdict

    kept = {"verdict": "fail", "observed": "no RST"}
    slow_guest_verdict(kept, 0.004)
    assert kept == {"verdict": "fail", "observed": "no RST"}
    starved = {"verdict": "fail", "observed": "no RST"}
    slow_guest_verdict(starved, LATE_ANSWER_S + 0.5)
    assert starved["verdict"] == "not-measurable" and "answered after 0.75 s" in starved["observed"]
    silent = {"verdict": "fail", "observed": "x"}
    slow_guest_verdict(silent, None)
    assert silent["verdict"] == "not-measurable" and "not at all" in silent["observed"]
    passed = {"verdict": "pass", "observed": "ok"}
    slow_guest_verdict(passed, None)
    assert passed["verdict"] == "pass"


def test_a_counter_an_older_kernel_lacks_is_absent_not_a_disagreement() -> None:
    from testbed.probe.kernel_counters import check

    on_618 = check("dss_stripped_after_data", {"MPTcpExtDssFallback": 1}, {"MPTcpExtDssFallback"})
    assert on_618 == {"expected": {"DssFallback": "=1"}, "observed": {"DssFallback": 1}, "agree": True}
    on_61 = check("dss_stripped_after_data", {}, {"MPTcpExtMPCapableSYNRX"})
    assert on_61 is not None and on_61["agree"] and on_61["absent"] == ["DssFallback"]
    missed = check("dss_stripped_after_data", {}, {"MPTcpExtDssFallback"})
    assert missed is not None and not missed["agree"]


def test_dss_duplicate_counts_only_the_echo_of_its_own_payload() -> None:
    """A retransmission of the opening echo (DSN before `since`) in the window is not the
    duplicate being delivered twice (a 7.2 guest's RTO once fired just as the data ACK left)."""
    from types import SimpleNamespace

    from testbed.probe.probes_dss import _dsn_span
    from testbed.wire.types import Dss

    def packet(dsn: int, size: int) -> SimpleNamespace:
        option = Dss(dsn=dsn, data_len=size, subflow_seq=1)
        return SimpleNamespace(tcp=SimpleNamespace(payload=b"x" * size, find=lambda kind: option))

    top = (1 << 64) - 20  # DSNs wrap at 2^64
    seen = [packet(top - 41, 41), packet(top, 120), packet(top, 120)]
    assert _dsn_span(seen) == 161
    assert _dsn_span(seen, since=top) == 120
