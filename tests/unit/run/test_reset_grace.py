"""The runner stops waiting for the server once the client's report shows a reset or a
refusal (the class is `reset` whatever the server says), and only then."""

from __future__ import annotations

import dataclasses

import pytest

from testbed.endpoints.report import EndpointReport
from testbed.runner import EndpointOutput, ended_by_reset

CLIENT = EndpointReport(role="client", connection=0, transport="mptcp",  # type: ignore[arg-type]
                        mptcp_requested=True, mptcp_used=True, direction="upload", sending=True,
                        mode="bytes", requested_bytes=1000, requested_seconds=None, seed=1,
                        bytes=0, sha256="0" * 64, duration_s=0.0, goodput_mbps=0.0, local=None,
                        remote=None, started_at_unix=None)


def output_of(**changes: object) -> EndpointOutput:
    report = dataclasses.replace(CLIENT, **changes)  # type: ignore[arg-type]
    return EndpointOutput(stdout=report.to_json() + "\n", stderr="", exit_code=1)


@pytest.mark.parametrize(("kind", "reset"), [
    ("reset", True), ("refused", True), ("timeout", False), ("interrupted", False),
    ("protocol", False), (None, False)])
def test_only_a_reset_or_refusal_ends_the_wait_early(kind: str | None, reset: bool) -> None:
    error = None if kind is None else f"example {kind}"
    assert ended_by_reset(output_of(error_kind=kind, error=error)) is reset


@pytest.mark.parametrize("stdout", ["", "not json\n", '{"event": "listening"}\n'])
def test_no_readable_report_is_not_a_reset(stdout: str) -> None:
    assert ended_by_reset(EndpointOutput(stdout=stdout, stderr="", exit_code=None)) is False
