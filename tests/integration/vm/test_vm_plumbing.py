"""`testbed vm` without booting anything: kernel and tool discovery, the KVM/TCG choice and its
cache, the guest script's quoting and status file, and the host side (output pumping, exit
status, timeout) against a stand-in for virtme-ng that runs the guest script on the host."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import vm
from testbed.errors import EnvironmentProblem, RunFailed, SpecError

PROJECT = Path(__file__).resolve().parents[3]


def _kernel_tree(root: Path, release: str, netem: bool = True) -> vm.KernelImage:
    boot = root / "boot"
    boot.mkdir(exist_ok=True)
    (boot / f"vmlinuz-{release}").write_bytes(b"\0")
    sched = root / "modules" / release / "kernel" / "net" / "sched"
    sched.mkdir(parents=True)
    (sched / "sch_htb.ko.xz").write_bytes(b"\0")
    if netem:
        (sched / "sch_netem.ko.xz").write_bytes(b"\0")
    return vm.KernelImage(boot / f"vmlinuz-{release}", release, root / "modules" / release)


def test_newest_kernel_with_netem_wins(tmp_path: Path) -> None:
    _kernel_tree(tmp_path, "6.1.0-9-amd64")
    newest = _kernel_tree(tmp_path, "6.1.0-56-amd64")
    _kernel_tree(tmp_path, "6.12.0-1-amd64", netem=False)  # newer, but useless here
    assert vm.choose_kernel(None, tmp_path / "boot", tmp_path / "modules") == newest
    assert [k.release for k in vm.find_kernels(tmp_path / "boot", tmp_path / "modules")] == [
        "6.1.0-56-amd64", "6.1.0-9-amd64"]


def test_missing_kernel_says_what_to_install(tmp_path: Path) -> None:
    _kernel_tree(tmp_path, "6.18.0-custom", netem=False)
    with pytest.raises(EnvironmentProblem, match="apt-get install linux-image-amd64"):
        vm.choose_kernel(None, tmp_path / "boot", tmp_path / "modules")


def test_explicit_kernel_needs_its_modules(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        vm.choose_kernel(str(tmp_path / "vmlinuz-x"), tmp_path, tmp_path)
    (tmp_path / "vmlinuz-7.0-test").write_bytes(b"\0")
    with pytest.raises(EnvironmentProblem, match="no module tree"):
        vm.choose_kernel(str(tmp_path / "vmlinuz-7.0-test"), tmp_path, tmp_path / "modules")
    kernel = _kernel_tree(tmp_path, "7.1-test")
    assert vm.choose_kernel(str(kernel.path), tmp_path, tmp_path / "modules") == kernel


def test_missing_tools_are_all_named_with_their_package(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem) as caught:
        vm.find_tools(which=lambda name: None, venv_bin=tmp_path)
    message = caught.value.message
    assert "pip install virtme-ng" in message
    assert "apt-get install qemu-system-x86" in message
    assert "apt-get install busybox-static" in message


def test_a_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    static = tmp_path / "static-elf"
    static.write_bytes(_elf([1]))  # PT_LOAD only
    dynamic = tmp_path / "dynamic-elf"
    dynamic.write_bytes(_elf([6, 3, 1]))  # PT_PHDR, PT_INTERP, PT_LOAD
    assert vm.is_static_elf(static) and not vm.is_static_elf(dynamic)
    assert not vm.is_static_elf(Path(sys.executable).resolve())  # the dynamic python itself
    paths = {"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64", "busybox": str(dynamic)}
    with pytest.raises(EnvironmentProblem, match="dynamically linked"):
        vm.find_tools(which=paths.get, venv_bin=tmp_path)
    paths["busybox"] = str(static)
    (tmp_path / "vng").write_text("")
    tools = vm.find_tools(which=paths.get, venv_bin=tmp_path)
    assert (tools.busybox, tools.vng) == (static, tmp_path / "vng")


def _elf(segment_types: list[int]) -> bytes:
    """A minimal 64-bit little-endian ELF header and program header table."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 32, 64)  # e_phoff
    struct.pack_into("<HH", header, 54, 56, len(segment_types))  # e_phentsize, e_phnum
    table = b"".join(struct.pack("<I", kind) + bytes(52) for kind in segment_types)
    return bytes(header) + table


def _tools(tmp_path: Path) -> vm.Tools:
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_bytes(b"\0")
    return vm.Tools(vng=tmp_path / "vng", qemu=qemu, busybox=tmp_path / "busybox")


class ProbeSpy:
    def __init__(self, works: bool) -> None:
        self.works = works
        self.calls = 0

    def __call__(self, kernel: vm.KernelImage, tools: vm.Tools) -> tuple[bool, str]:
        self.calls += 1
        return self.works, "probe says so"


def test_accel_forced_or_probed_once_then_cached(tmp_path: Path) -> None:
    kernel = _kernel_tree(tmp_path, "6.1.0-56-amd64")
    tools = _tools(tmp_path)
    cache = tmp_path / "cache" / "vm-accel.json"
    usable = lambda: (True, "ok")  # noqa: E731
    spy = ProbeSpy(works=False)

    def choose(requested: str, **kwargs: object) -> vm.AccelChoice:
        return vm.choose_accel(requested, kernel, tools, device_check=usable, probe=spy,
                               cache_file=cache, **kwargs)

    assert choose("tcg").accel == "tcg"
    assert choose("kvm").accel == "kvm"
    assert spy.calls == 0
    first = choose("auto")
    assert (first.accel, spy.calls) == ("tcg", 1)
    again = choose("auto")
    assert (again.accel, spy.calls) == ("tcg", 1)
    assert "cached" in again.reason
    spy.works = True
    assert choose("auto", reprobe=True).accel == "kvm"
    assert spy.calls == 2
    with pytest.raises(SpecError, match="choose one of"):
        choose("hvf")


def test_no_kvm_device_means_tcg_without_probing(tmp_path: Path) -> None:
    kernel = _kernel_tree(tmp_path, "6.1.0-56-amd64")
    spy = ProbeSpy(works=True)
    missing = lambda: (False, "/dev/kvm does not exist")  # noqa: E731
    choice = vm.choose_accel("auto", kernel, _tools(tmp_path), device_check=missing, probe=spy,
                             cache_file=tmp_path / "c.json")
    assert (choice.accel, spy.calls) == ("tcg", 0)
    with pytest.raises(EnvironmentProblem, match="--accel kvm but /dev/kvm does not exist"):
        vm.choose_accel("kvm", kernel, _tools(tmp_path), device_check=missing, probe=spy)


def _plan(tmp_path: Path, command: list[str], accel: str = "tcg") -> vm.VmPlan:
    kernel = vm.KernelImage(tmp_path / "vmlinuz-6.1.0-56-amd64", "6.1.0-56-amd64", tmp_path)
    return vm.VmPlan(kernel=kernel, tools=_tools(tmp_path), accel=accel, command=command,
                     cwd=tmp_path, state_dir=tmp_path / "state", rw_dirs=[PROJECT], cached_mounts=False)


def test_vng_command_line_has_no_network_and_shares_the_project(tmp_path: Path) -> None:
    tcg = vm.build_vng_argv(_plan(tmp_path, ["true"], accel="tcg"))
    kvm = vm.build_vng_argv(_plan(tmp_path, ["true"], accel="kvm"))
    assert "--disable-kvm" in tcg and "--disable-kvm" not in kvm
    assert "--append=clocksource=tsc" in tcg
    for argv in (tcg, kvm):
        assert not any(a.startswith(("--network", "-n")) for a in argv)
        assert f"--rwdir={PROJECT}" in argv
        assert f"--rwdir={tmp_path / 'state'}" in argv
        assert argv[argv.index("--user") + 1] == "root"
    cached = _plan(tmp_path, ["true"])
    cached.cached_mounts = True
    argv = vm.build_vng_argv(cached)
    opts = next(a for a in argv if a.startswith("--qemu-opts="))
    assert f"mount_tag={vm.CACHED_ROOT_TAG}" in opts and "readonly=on" in opts
    assert " " not in opts.split(" -device ")[0].removeprefix("--qemu-opts=-fsdev ")
    assert argv[-2:] == ["--exec", f"sh {cached.state_dir / vm.GUEST_SCRIPT}"]
    script = vm.plan_guest_script(cached)
    assert "cache=loose" in script and "mount --bind" in script


def test_guest_script_keeps_arguments_intact_and_records_status(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    tricky = ["a b", "$HOME", "it's", '"q"', "*", "--"]
    script = vm.guest_script(["sh", "-c", 'printf "%s|" "$@"; exit 9', "sh", *tricky],
                             tmp_path, state, tmp_path / "venv-bin")
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd="/")
    assert done.returncode == 9
    assert done.stdout == "".join(f"{arg}|" for arg in tricky)
    assert (state / "started").read_text() == "up\n"
    assert (state / "status").read_text() == "9\n"


FAKE_VNG = """#!/bin/sh
# stands in for virtme-ng: runs the --exec script on the host and exits with its status
while [ $# -gt 0 ]; do
  if [ "$1" = "--exec" ]; then exec sh -c "$2"; fi
  shift
done
exit 99
"""


def _fake_plan(tmp_path: Path, command: list[str]) -> vm.VmPlan:
    fake = tmp_path / "vng"
    fake.write_text(FAKE_VNG)
    fake.chmod(0o755)
    return _plan(tmp_path, command)


def test_execute_returns_status_and_keeps_output_in_order_in_regular_files(tmp_path: Path) -> None:
    plan = _fake_plan(tmp_path, ["sh", "-c", "for i in 1 2 3; do echo out$i; echo err$i >&2; done; exit 4"])
    with open(tmp_path / "out.txt", "wb") as out, open(tmp_path / "err.txt", "wb") as err:
        outcome = vm.execute(plan, timeout_s=30, stdout_fd=out.fileno(), stderr_fd=err.fileno())
    assert (outcome.started, outcome.command_status, outcome.vng_status) == (True, 4, 4)
    assert (tmp_path / "out.txt").read_text() == "out1\nout2\nout3\n"
    assert (tmp_path / "err.txt").read_text() == "err1\nerr2\nerr3\n"


def test_execute_kills_the_vm_on_timeout(tmp_path: Path) -> None:
    plan = _fake_plan(tmp_path, ["sleep", "30"])
    with pytest.raises(RunFailed, match="no result after 1 s"):
        vm.execute(plan, timeout_s=1, capture=True)
    assert not (plan.state_dir / "status").exists()


def test_cli_without_a_command_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "testbed.vm", "run", "--accel", "tcg", "--"],
                          capture_output=True, text=True, cwd=PROJECT, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "give a command after --" in done.stderr
