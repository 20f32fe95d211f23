"""The python endpoint's command line takes IPv6 and IPv4-mapped addresses, in the stack's
one spelling of each (testbed.mptcp.addresses)."""

from __future__ import annotations

import argparse

import pytest

from testbed.endpoints.stack_endpoint import _address, _announce_target, build_parser
from testbed.endpoints.stack_transfer import Action


def test_addresses_are_brought_to_one_spelling() -> None:
    assert _address("FD00:10:0:2:0::1") == "fd00:10:0:2::1"
    assert _address("::ffff:10.0.100.2") == "10.0.100.2"  # a dual-stack socket's IPv4 peer
    assert _address("[fd00::1]") == "fd00::1"
    with pytest.raises(argparse.ArgumentTypeError, match=r"'10\.0\.0' is not an IPv4 or IPv6 address"):
        _address("10.0.0")


def test_announce_takes_either_family_with_or_without_a_port() -> None:
    assert _announce_target("10.0.100.3:5202") == ("10.0.100.3", 5202)
    assert _announce_target("fd00:10:0:100::2") == ("fd00:10:0:100::2", None)
    assert _announce_target("[fd00:10:0:100::2]:5202") == ("fd00:10:0:100::2", 5202)
    with pytest.raises(argparse.ArgumentTypeError, match=r"the port must be 1\.\.65535"):
        _announce_target("[fd00::2]:0")


def test_timed_actions_name_ipv6_addresses() -> None:
    assert Action.parse("2M:remove-addr:FD00:10:0:2::1").arg == "fd00:10:0:2::1"
    assert Action.parse("1k:backup:[fd00::1]").arg == "fd00::1"
    with pytest.raises(ValueError, match=r"'1\.2\.3' is not an IPv4 or IPv6 address"):
        Action.parse("1k:backup:1.2.3")


def test_the_runner_s_dual_stack_arguments_parse() -> None:
    args = build_parser().parse_args(["client", "--connect", "[::ffff:10.0.100.2]:5201", "--bind",
                                      "[::ffff:192.168.1.1]", "--local", "192.168.1.1", "--local",
                                      "fd00:10:0:2::1", "--seconds", "1"])
    assert args.connect == ("::ffff:10.0.100.2", 5201) and args.local == ["192.168.1.1", "fd00:10:0:2::1"]
    server = build_parser().parse_args(["server", "--listen", "[::]:5201", "--announce", "10.0.100.2"])
    assert server.listen == ("::", 5201) and server.announce == [("10.0.100.2", None)]


def test_connecting_to_a_family_without_a_local_address_is_one_line_and_exit_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    from testbed.endpoints.stack_endpoint import main

    assert main(["client", "--connect", "[fd00::1]:5201", "--local", "10.0.0.1", "--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert err == ("client: --connect fd00::1: no local address of its family to connect from "
                   "(local 10.0.0.1)\n")
