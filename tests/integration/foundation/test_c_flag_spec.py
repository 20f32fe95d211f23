"""`[mptcp] server_c_flag = true` (issue 16): the server's MP_CAPABLE carries the C flag ("do not
open subflows to my initial address and port"), set through Linux's
net.mptcp.allow_join_initial_addr_port=0 or the python stack's config. On two_path the server
has one address and announces none, so a Linux client that would otherwise join from its
second address opens no subflow at all. A server stack that cannot set the flag is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.foundation.conftest import RUN_ID, leftovers, run_cli, write_spec

C_FLAG = "[mptcp]\nserver_c_flag = true"


@pytest.mark.parametrize("server", ["kernel", "python"])
def test_a_c_flag_server_gets_no_join_to_its_only_address(tmp_path: Path, server: str) -> None:
    out = tmp_path / "out"
    done = run_cli("run", str(write_spec(tmp_path, seconds=2, server=server, extra=C_FLAG)),
                   "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert leftovers(RUN_ID.search(done.stdout).group(1)) == []
    (conn,) = json.loads((out / "result.json").read_text())["connections"]
    assert conn["mptcp"] is True and conn["integrity"] == "ok", conn["outcome"]
    # without the flag this client joins from 10.0.2.1 (test_run_and_teardown's 2 subflows)
    assert [s["local"].split(":")[0] for s in conn["subflows"]] == ["10.0.1.1"], conn["subflows"]
    client = conn["counters"]["client"]
    assert client.get("MPTcpExtMPJoinSynTx", 0) == 0, client
    if server == "kernel":
        assert conn["counters"]["server"].get("MPTcpExtMPJoinSynRx", 0) == 0


def test_a_server_stack_that_cannot_set_it_is_refused(tmp_path: Path) -> None:
    done = run_cli("run", str(write_spec(tmp_path, server="tcp", extra=C_FLAG)),
                   "--out", str(tmp_path / "never"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "server_c_flag" in done.stderr
    assert "cannot set MP_CAPABLE's C flag" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "never").exists()
