"""`--target command:NAME`: the stack table is checked before anything is built (one line each),
the templates get the probe bed's addresses, and the probes a command server cannot answer
are rows that say so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.endpoints.command_template import fill_template
from testbed.probe.bed import ANNOUNCED, PROBER, TARGET, ProbeError
from testbed.probe.catalogue import load
from testbed.probe.command_target import (
    REPLY_PROBES,
    check_stack,
    client_values,
    not_run_row,
    template_values,
)

GOOD = {"server": "sh -c 'cat > /dev/null' {listen_addr} {port}", "client": "cat {server_addr} {port}"}


def test_templates_get_the_bed_addresses() -> None:
    assert fill_template("x {listen_addr} {server_addr1} {port}", template_values(5201)) == \
        f"x {TARGET} {ANNOUNCED} 5201"
    assert fill_template("c {server_addr} {client_addr} {port}", client_values(40999)) == \
        f"c {PROBER[0]} {TARGET} 40999"


@pytest.mark.parametrize(("stacks", "words"), [
    (None, "no [stacks.s] table"),
    ({"other": GOOD}, "no [stacks.s] table"),
    ({"s": {**GOOD, "server": "no-such-program-xyz {port}"}}, "'no-such-program-xyz' is not on PATH"),
    ({"s": {**GOOD, "client": "cat {server_addr7}"}}, "client command: placeholder {server_addr7}"),
])
def test_bad_stack_is_one_line(stacks, words) -> None:
    with pytest.raises(ProbeError) as caught:
        check_stack("command:s", stacks)
    assert words in caught.value.message and "\n" not in caught.value.message
    assert check_stack("command:s", {"s": GOOD}) is GOOD


def test_cli_needs_the_stacks_file(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.toml"
    stacks.write_text('[stacks.s]\nserver = "nope-prog {port}"\nclient = "cat"\n')
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "probe", "--target", "command:s",
                           "--stacks", str(stacks), "--out", str(tmp_path / "X")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "'nope-prog' is not on PATH" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "X").exists()


def test_reply_probes_exist_and_say_why() -> None:
    catalogue = load()
    assert set(catalogue) >= REPLY_PROBES
    row = not_run_row(catalogue["mpc_idsn"])
    assert row["verdict"] == "not-measurable" and "command target" in row["observed"]
    assert row["group"] == "signalling" and row["trace"] == []


def test_the_package_entry_point_takes_the_stacks(tmp_path: Path) -> None:
    """testbed.probe.run_probes (what the survey calls) hands a command target its stacks."""
    from testbed.probe import run_probes

    with pytest.raises(ProbeError, match="'no-such-program-xyz' is not on PATH"):
        run_probes("command:s", None, tmp_path / "X",
                   stacks={"s": {**GOOD, "server": "no-such-program-xyz {port}"}})
    assert not (tmp_path / "X").exists()
