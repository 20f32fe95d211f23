"""The command contract's pure parts: templates, readiness, ss parsing, spec and matrix parsing."""

from __future__ import annotations

import pytest

from testbed.endpoints.command_ss import parse_ss
from testbed.endpoints.command_template import (
    TemplateError,
    TemplateValues,
    check_done,
    check_ready,
    check_template,
    fill_template,
    missing_program,
    program_of,
)
from testbed.errors import SpecError
from testbed.matrix import parse_matrix_spec, parse_pairing
from testbed.spec import parse_spec, tomllib

VALUES = TemplateValues(client_addresses=("10.0.1.1", "10.0.2.1"), server_addresses=("10.0.100.2",),
                        port=5201, bytes=1000, seconds=None, timeout_s=20.0, seed=7)


def test_template_fills_every_placeholder() -> None:
    line = fill_template("prog {server_addr}:{port} -s {client_addr1} -n {stdin_bytes} {{x}} {seed}",
                         VALUES)
    assert line == "prog 10.0.100.2:5201 -s 10.0.2.1 -n 1024 {x} 7"


@pytest.mark.parametrize("template, wanted", [
    ("prog {nope}", "unknown placeholder {nope}"),
    ("prog {port!r}", "no format spec"),
    ("prog {port", "malformed braces"),
    ("prog 'unterminated", "cannot split"),
    ("   ", "empty"),
])
def test_bad_templates_are_named(template: str, wanted: str) -> None:
    with pytest.raises(TemplateError, match=wanted.replace("{", r"\{").replace("}", r"\}")):
        check_template(template)


def test_an_address_the_host_lacks_is_an_error() -> None:
    check_template("prog {server_addr1}")  # a valid name; only the topology can refuse it
    with pytest.raises(TemplateError, match="only 1 address"):
        fill_template("prog {server_addr1}", VALUES)


def test_ready_and_done_forms() -> None:
    for ready in ("listen", "stderr:listening on", "delay:0.5"):
        check_ready(ready)
    for bad in ("stderr:", "delay:x", "delay:99", "socket"):
        with pytest.raises(TemplateError):
            check_ready(bad)
    check_done("peer-close")
    with pytest.raises(TemplateError, match="peer-close"):
        check_done("eof")


def test_the_program_behind_a_wrapper_is_checked() -> None:
    assert program_of(["mptcpize", "run", "ncat", "-l"]) == "ncat"
    assert program_of(["env", "A=1", "B=2", "socat", "-u"]) == "socat"
    assert program_of(["socat"]) == "socat"
    assert missing_program("mptcpize run no-such-program-xyz -l") == "no-such-program-xyz"
    assert missing_program("no-such-program-xyz") == "no-such-program-xyz"
    assert missing_program("sh -c true") is None


# `ss -tinMH` of an MPTCP client with one subflow (kernel 6.18), one TIME-WAIT leftover skipped
SS_OUTPUT = """\
tcp   ESTAB     0      0      10.99.0.1:47362 10.99.0.2:5555
\t bbr wscale:10,10 rto:204 rtt:0.009/0.008 mss:1448 cwnd:146 bytes_sent:109633536 \
bytes_retrans:1448 bytes_acked:109633537 segs_out:80300 retrans:0/3 tcp-ulp-mptcp flags:Mmec \
token:0000(id:0)/436b4d1a(id:0) seq:928ed7b95a1ebb6a sfseq:1 ssnoff:df00ae03 maplen:0
tcp   ESTAB     0      0      10.99.1.1:40000 10.99.0.2:5555
\t cubic rtt:2.5/1 cwnd:10 bytes_sent:5000 bytes_acked:4001 tcp-ulp-mptcp flags:Jjec token:1/2
mptcp ESTAB     0      0      10.99.0.1:47362 10.99.0.2:5555
\t subflows:1 subflows_max:2 remote_key token:436b4d1a write_seq:c1f6 snd_una:c1f6 rcv_nxt:928e
"""


def test_ss_output_becomes_an_observation() -> None:
    view = parse_ss(SS_OUTPUT)
    assert view.tcp_sockets == 2 and view.mptcp_subflows == 2
    assert (view.local, view.remote) == ("10.99.0.1:47362", "10.99.0.2:5555")
    first, second = view.observation.subflows
    assert first.counters.bytes_sent == 109633536 and first.counters.bytes_acked == 109633537
    assert first.counters.bytes_retrans == 1448 and first.counters.total_retrans == 3
    assert first.counters.rtt_us == 9 and first.counters.snd_cwnd == 146
    assert second.local == "10.99.1.1:40000" and second.counters.rtt_us == 2500
    info = view.observation.mptcp_info
    assert info is not None and info.subflows == 1 and info.remote_key_received and not info.fallback


def test_ss_sees_plain_tcp_and_fallback() -> None:
    plain = parse_ss("tcp ESTAB 0 0 1.1.1.1:1 2.2.2.2:2\n\t cubic bytes_sent:10 bytes_acked:11\n")
    assert plain.tcp_sockets == 1 and plain.mptcp_subflows == 0
    fallen = parse_ss("mptcp ESTAB 0 0 1.1.1.1:1 2.2.2.2:2\n\t subflows_max:2 fallback remote_key\n")
    assert fallen.observation.mptcp_info is not None and fallen.observation.mptcp_info.fallback
    assert parse_ss("").tcp_sockets == 0


def _spec(endpoints: str, extra: str = "", traffic: str = "bytes = 1000") -> dict:


    return tomllib.loads(f"""
[topology]
name = "two_path"
{extra}
{endpoints}
[traffic]
{traffic}
""")


NAMED = """
[[endpoints]]
role = "server"
stack = "command:ncat"
[[endpoints]]
role = "client"
stack = "kernel"
"""
STACKS = """
[stacks.ncat]
client = "ncat {server_addr} {port}"
server = "ncat -k -l {listen_addr} {port}"
done = "peer-close"
"""


def test_a_named_command_stack_is_parsed() -> None:
    spec = parse_spec(_spec(NAMED, STACKS))
    assert spec.server.stack == "command" and spec.server.label == "command:ncat"
    assert spec.server.command == "ncat -k -l {listen_addr} {port}" and spec.server.done == "peer-close"
    assert spec.client.label == "kernel" and spec.client.command is None


@pytest.mark.parametrize("endpoints, extra, traffic, wanted", [
    (NAMED, "", "bytes = 1000", r"no \[stacks.ncat\] table"),
    (NAMED, STACKS.replace("{port}\"\ndone", "{prot}\"\ndone"), "bytes = 1000", "unknown placeholder"),
    (NAMED, STACKS, "bytes = 1000\ndirection = \"download\"", "client -> server only"),
    (NAMED.replace('stack = "kernel"', 'stack = "kernel"\ncommand = "x"'), STACKS, "bytes = 1000",
     "only command endpoints"),
    (NAMED.replace('stack = "command:ncat"', 'stack = "command"'), "", "bytes = 1000", "needs command"),
    (NAMED, STACKS.replace("[stacks.ncat]", "[stacks.my-ncat]"), "bytes = 1000", "no '-'"),
    (NAMED, STACKS.replace('done = "peer-close"', 'ready = "sometime"'), "bytes = 1000", "ready"),
])
def test_bad_command_endpoints_are_one_line_spec_errors(endpoints: str, extra: str, traffic: str,
                                                        wanted: str) -> None:
    with pytest.raises(SpecError, match=wanted):
        parse_spec(_spec(endpoints, extra, traffic))


def test_matrix_pairings_name_command_stacks() -> None:
    assert parse_pairing("command:ncat-kernel", "x") == ("command:ncat", "kernel")
    for bad in ("command-kernel", "command:-kernel", "cmd:ncat-kernel"):
        with pytest.raises(SpecError, match="unknown stack"):
            parse_pairing(bad, "x")


    raw = tomllib.loads(f"""
pairings = ["command:ncat-kernel", "kernel-command:ncat"]
{STACKS}
[base.topology]
name = "two_path"
[base.traffic]
bytes = 1000
[[middleboxes]]
name = "none"
chain = []
expect = {{ default = "mptcp" }}
""")
    matrix = parse_matrix_spec(raw)
    cells = {cell.pairing: cell.spec for cell in matrix.cells}
    assert cells["command:ncat-kernel"].client.label == "command:ncat"
    assert cells["kernel-command:ncat"].server.command == "ncat -k -l {listen_addr} {port}"
    del raw["stacks"]
    with pytest.raises(SpecError, match=r"no \[stacks.ncat\]"):
        parse_matrix_spec(raw)
