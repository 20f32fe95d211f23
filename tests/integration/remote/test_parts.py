"""The pieces of `testbed remote run` that need no SSH: the --hosts grammar, quoting (checked
by a real shell), the shard queue's hand-outs and requeues, the project tarball, the merge."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from testbed.cli import main as cli_main
from testbed.errors import SpecError
from testbed.matrix import load_matrix_spec, matrix_document, select
from testbed.remote import command
from testbed.remote.cli import remote_path
from testbed.remote.hosts import parse_hosts
from testbed.remote.merge import ShardUnusable, adopt_shard, merged_document, read_shard
from testbed.remote.shard import Shard, ShardQueue, plan_shards
from testbed.remote.ship import build_archive, project_files, project_root

PROJECT = Path(__file__).resolve().parents[3]
CI_SPEC = PROJECT / "experiments" / "fallback_matrix_ci.toml"
NASTY = ["plain", "two words", "semi;colon", "$(touch /x)", "`id`", "it's", 'dq"', "new\nline", "-n",
         "*", "~", "a\\b", "$HOME", "!event", ""]


def test_host_grammar_accepts_users_ports_ipv6_and_aliases() -> None:
    hosts = parse_hosts("root@lab1, lab2:2222,me@10.0.0.7:22,[fe80::1]:2200,ops@[2001:db8::5]")
    assert [(h.user, h.host, h.port, h.label) for h in hosts] == [
        ("root", "lab1", None, "lab1"), (None, "lab2", 2222, "lab2_2222"),
        ("me", "10.0.0.7", 22, "10.0.0.7_22"),
        (None, "fe80::1", 2200, "fe80__1_2200"), ("ops", "2001:db8::5", None, "2001_db8__5")]


@pytest.mark.parametrize(("value", "complaint"), [
    ("", "no hosts"), ("lab1,", "empty entry"), ("root@", "host ''"), ("@lab1", "user ''"),
    ("-oProxyCommand=id", "host"), ("root@lab1;id", "host 'lab1;id'"), ("lab1 lab2", "host"),
    ("lab1:0", "port '0'"), ("lab1:70000", "port '70000'"), ("lab1:22x", "port"), ("r$(id)@lab1", "user"),
    ("[::1", "unclosed"), ("[lab1]:22", "not an IPv6"), ("lab1,root@lab1", "same host"),
    ("lab\x01", "host"), ("a..b", "host"),
])
def test_bad_host_strings_are_one_clear_error(value: str, complaint: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_hosts(value)
    assert complaint in caught.value.message and caught.value.exit_code == 2


def test_every_word_reaches_the_remote_program_exactly(tmp_path: Path) -> None:
    """A real POSIX shell parses the line: the program sees each value as one unchanged word,
    and nothing in the values runs (the marker file is never created)."""
    marker = tmp_path / "marker"
    values = [*NASTY, f"$(touch {marker})", f"; touch {marker}", f"' ; touch {marker}; '"]
    line = command.shell_line(["python3", "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *values])
    for shell in ("sh", "bash"):
        done = subprocess.run([shell, "-c", line], capture_output=True, text=True, check=True, cwd=tmp_path)
        assert json.loads(done.stdout) == values
    assert not marker.exists()


def test_remote_commands_glue_values_to_their_options() -> None:
    layout = command.RemoteLayout(tree="/t t", python="/p", sudo=True)
    argv = layout.matrix("/s;x.toml", "/o", ["-row"], ["kernel-kernel"])
    assert argv[:4] == ["sudo", "-n", "--", "env"]
    assert "--rows=-row" in argv and "--spec=/s;x.toml" in argv and "PYTHONPATH=/t t" in argv
    with pytest.raises(ValueError, match="NUL"):
        command.shell_line(["echo", "a\0b"])


def test_remote_paths() -> None:
    assert remote_path("~/.cache/x", "/root", "--remote-dir") == "/root/.cache/x"
    assert remote_path("~", "/home/u", "--remote-dir") == "/home/u"
    assert remote_path("rel/dir/", "/home/u", "--remote-dir") == "/home/u/rel/dir"
    assert remote_path("/abs", "/home/u", "--remote-dir") == "/abs"
    with pytest.raises(SpecError, match="~user"):
        remote_path("~bob/x", "/home/u", "--remote-dir")
    for escaping in ("..", "../x", "~/a/../../b", "/srv/x/..", "a/../b"):
        with pytest.raises(SpecError, match=r"'\.\.' is not allowed"):
            remote_path(escaping, "/home/u", "--remote-dir")
    assert remote_path("~/a..b/..c", "/home/u", "--remote-dir") == "/home/u/a..b/..c"


def test_one_shard_per_cell_in_spec_order() -> None:
    matrix = select(load_matrix_spec(CI_SPEC), "none,strip_mp_join", None)
    shards = plan_shards(matrix)
    assert [(s.index, s.row, s.pairings) for s in shards] == [
        (1, "none", ("kernel-kernel",)), (2, "strip_mp_join", ("kernel-kernel",))]
    assert shards[1].name == "s002-strip_mp_join-kernel-kernel"


def test_queue_requeues_a_failed_hosts_shard_first_and_waits_for_running_ones() -> None:
    shards = [Shard(i, f"r{i}", ("kernel-kernel",)) for i in (1, 2, 3)]
    queue = ShardQueue(shards)
    stop = threading.Event()
    first, second = queue.take("h1", stop), queue.take("h2", stop)
    assert (first.index, second.index) == (1, 2)
    queue.give_back(first, failed_host="h1")
    assert queue.take("h2", stop) is first  # the returned shard goes before shard 3
    assert queue.attempts == {1: ["h1"]}
    queue.finish(first)
    third = queue.take("h2", stop)
    got: list[Shard | None] = []
    waiter = threading.Thread(target=lambda: got.append(queue.take("h3", stop)))
    waiter.start()  # nothing waiting, but 2 and 3 are running: h3 must wait, not leave
    waiter.join(timeout=0.5)
    assert waiter.is_alive()
    queue.give_back(second, failed_host="h2")
    waiter.join(timeout=5)
    assert got == [second]
    queue.finish(second)
    queue.finish(third)
    assert queue.take("h3", stop) is None and queue.unfinished() == []
    stop.set()
    assert ShardQueue(shards).take("h1", stop) is None


def test_project_archive_is_deterministic_and_keeps_executables() -> None:
    root = project_root()
    files = project_files(root)
    assert "testbed/remote/agent.py" in files and "scripts/setup.sh" in files
    assert not [f for f in files if f.startswith((".venv/", "results/")) or "__pycache__" in f]
    one, two = build_archive(root, files), build_archive(root, files)
    assert one.data == two.data and one.digest == two.digest and len(one.digest) == 16
    with tarfile.open(fileobj=io.BytesIO(one.data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["scripts/setup.sh"].mode == 0o755 and members["testbed/cli.py"].mode == 0o644
    assert sorted(members) == sorted(files)


def _shard_output(tmp_path: Path, cells: list[dict], partial: bool = False) -> Path:
    staging = tmp_path / "staging"
    staging.mkdir(parents=True)
    for cell in cells:
        (staging / "cells" / cell["row"] / cell["pairing"]).mkdir(parents=True)
        (staging / "cells" / cell["row"] / cell["pairing"] / "result.json").write_text("{}")
    (staging / "matrix.json").write_text(json.dumps({"kind": "matrix", "partial": partial, "cells": cells}))
    return staging


def test_merge_reroots_cells_under_their_host_in_spec_order(tmp_path: Path) -> None:
    matrix = select(load_matrix_spec(CI_SPEC), "none,strip_mp_join", None)
    shard = Shard(2, "strip_mp_join", ("kernel-kernel",))
    cell = {"row": "strip_mp_join", "pairing": "kernel-kernel", "status": "ok", "outcome": "subflow-rejected",
            "expected": "subflow-rejected", "as_expected": True, "dir": "cells/strip_mp_join/kernel-kernel"}
    staging = _shard_output(tmp_path, [cell])
    records = adopt_shard(staging, tmp_path / "out" / "h2", shard, read_shard(staging, shard), "h2")
    assert records[0]["dir"] == "h2/cells/strip_mp_join/kernel-kernel" and records[0]["host"] == "h2"
    assert (tmp_path / "out" / records[0]["dir"] / "result.json").exists()
    assert (tmp_path / "out" / "h2" / "shards" / f"{shard.name}.json").exists()
    first = {**cell, "row": "none", "outcome": "mptcp", "expected": "mptcp",
             "dir": "h1/cells/none/kernel-kernel"}
    by_key = {("strip_mp_join", "kernel-kernel"): records[0], ("none", "kernel-kernel"): first}
    doc = merged_document(matrix, by_key,
                          partial=False, interrupted=False, started_at="t", elapsed_s=1.0, environment=None,
                          remote={"hosts": {}})
    local = matrix_document(matrix, [], partial=False, interrupted=False, started_at="t", elapsed_s=1.0,
                            environment=None)
    assert set(doc) == {*local, "remote"}
    assert [c["row"] for c in doc["cells"]] == ["none", "strip_mp_join"]
    assert doc["summary"]["as_expected"] == 2 and doc["summary"]["not_run"] == 0


def test_a_shard_with_other_cells_or_interrupted_is_refused(tmp_path: Path) -> None:
    shard = Shard(1, "none", ("kernel-kernel",))
    wrong = _shard_output(tmp_path / "a", [{"row": "other", "pairing": "kernel-kernel"}])
    with pytest.raises(ShardUnusable, match="not"):
        read_shard(wrong, shard)
    partial = _shard_output(tmp_path / "b", [], partial=True)
    with pytest.raises(ShardUnusable, match="partial"):
        read_shard(partial, shard)
    with pytest.raises(ShardUnusable, match="no readable"):
        read_shard(tmp_path / "missing", shard)


@pytest.mark.parametrize("hosts", ["root@lab1;touch x", "", "lab1:99999", "-oProxyCommand=sh"])
def test_cli_bad_hosts_is_one_line_exit_2(hosts: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status = cli_main(["remote", "run", str(CI_SPEC), f"--hosts={hosts}", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("testbed: --hosts") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before anything was created


def test_cli_missing_identity_and_bad_rows_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["remote", "run", str(CI_SPEC), "--hosts", "lab1", "--out", str(tmp_path / "out")]
    assert cli_main([*base, "--identity", str(tmp_path / "nokey")]) == 2
    assert "--identity: no such file" in capsys.readouterr().err
    assert cli_main([*base, "--rows", "nosuchrow"]) == 2
    assert "no row 'nosuchrow'" in capsys.readouterr().err
    assert cli_main([*base, "--remote-dir", "~bob/x"]) == 2
    assert "~user" in capsys.readouterr().err
