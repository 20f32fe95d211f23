"""`testbed lab check`: the Vagrant lab's boot-and-ssh check, short enough for the suite.

The full cycle (`testbed lab cycle`: the full box, provisioning, `make demo` inside) takes 12
minutes under TCG on an idle machine here and half an hour on a loaded one. This check keeps
what rots silently in a lab VM honest in a few minutes: the box builder (`build_box.sh
--boot-only`: the same script, booting the same way, without the project's packages), the box
format and its insecure-key convention, the project's own Vagrantfile on libvirt, the rsync'd
/vagrant, passwordless sudo, and netem in the guest's Debian kernel, measured with ping. Then
`vagrant destroy -f` must leave no domain, volume or qemu. Its VM carries its own name prefix
and Vagrant state directory, so a user's lab is never touched; `testbed clean` removes a check
VM that a killed check left (a running check holds a lock that keeps `testbed clean` off its VM
unless --all).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from testbed.errors import RunFailed
from testbed.lab_vagrant import (
    BOX_CACHE,
    Lab,
    build_box,
    check_preconditions,
    destroy_into,
    pool_volumes,
    setup,
    virsh,
)

CHECK_BOX = "mptcp-testbed/bookworm64-boot"
CHECK_BOX_FILE = BOX_CACHE / "mptcp-testbed-bookworm64-boot.box"
CHECK_PREFIX = "testbed-lab-check_"
CHECK_LOCK = BOX_CACHE / "lab-check.lock"
STATE_PREFIX = "tb-lab-check-"  # the check's Vagrant state directory, under the temp directory
MANAGEMENT_NETWORK = "vagrant-libvirt"
CHECK_MEMORY_MB = 1024
UP_TIMEOUT_S = 1200.0
NETEM_DELAY_MS = 5.0
# what the guest reports, one key=value per line; the RTT is ping's minimum over lo with netem
GUEST_SCRIPT = f"""
echo "kernel=$(uname -r)"
echo "system=$(systemctl is-system-running --wait 2>/dev/null)"
echo "synced=$(test -f /vagrant/Makefile && test -f /vagrant/Vagrantfile && echo yes || echo no)"
echo "sudo=$(sudo -n true 2>/dev/null && echo yes || echo no)"
echo "insecure_key=$(grep -c 'vagrant insecure public key' ~/.ssh/authorized_keys)"
if sudo -n modprobe sch_netem && sudo -n tc qdisc replace dev lo root netem delay {NETEM_DELAY_MS:g}ms
then echo "netem=yes"; else echo "netem=no"; fi
echo "rtt_min_ms=$(ping -c 5 -i 0.2 -q 127.0.0.1 | sed -n 's|.*= \\([0-9.]*\\)/.*|\\1|p')"
sudo -n tc qdisc del dev lo root 2>/dev/null
exit 0
"""


def guest_report(output: str) -> dict[str, str]:
    """The key=value lines of GUEST_SCRIPT's output (Vagrant's own lines carry no '=' first)."""
    report = {}
    for line in output.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.replace("_", "").isalnum():
            report[key] = value.strip()
    return report


def problems(report: dict[str, str]) -> list[str]:
    """What the guest's report says is wrong, one line each; empty when the lab VM is sound."""
    found = []
    if not report.get("kernel", "").endswith("-amd64"):
        found.append(f"not Debian's kernel: {report.get('kernel')!r}")
    if report.get("system") != "running":
        found.append(f"systemd says {report.get('system')!r}, not 'running' (a unit failed to start)")
    if report.get("synced") != "yes":
        found.append("the project is not in /vagrant (the rsync synced folder failed)")
    if report.get("sudo") != "yes":
        found.append("the vagrant user has no passwordless sudo")
    if report.get("insecure_key") != "0":
        found.append("Vagrant's insecure key is still authorised (the key swap on first up failed)")
    if report.get("netem") != "yes":
        found.append("netem could not be added in the guest (sch_netem missing from its kernel)")
    else:
        try:
            rtt = float(report.get("rtt_min_ms", ""))
        except ValueError:
            found.append(f"no RTT measured over netem: {report.get('rtt_min_ms')!r}")
        else:
            if not 2 * NETEM_DELAY_MS <= rtt <= 2 * NETEM_DELAY_MS + 5:
                found.append(f"netem's {NETEM_DELAY_MS:g} ms each way gave a {rtt} ms RTT, "
                             f"not {2 * NETEM_DELAY_MS:g}")
    return found


def lab_check(out: Path) -> int:
    """Set up, build the boot-only box, boot it, ssh in, destroy; writes out/lab-check.json."""
    out.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix=STATE_PREFIX))
    lab = Lab(overrides={"TESTBED_BOX": CHECK_BOX, "TESTBED_LAB_PREFIX": CHECK_PREFIX,
                         "TESTBED_LAB_MEMORY_MB": str(CHECK_MEMORY_MB),
                         "VAGRANT_DOTFILE_PATH": str(state)})
    record: dict[str, Any] = {"format": "mptcp-testbed-lab-check", "version": 1, "box": CHECK_BOX,
                              "steps": lab.steps}
    started = time.monotonic()
    try:
        setup()
        check_preconditions(need_box=False, memory_mb=CHECK_MEMORY_MB)
        lab.steps["setup"] = round(time.monotonic() - started, 1)
        with _check_lock() as lock:
            if lock is None:
                raise RunFailed("lab check: another lab check is running; wait for it or run: "
                                "testbed clean --all")
            for item in remove_check_vms(include_live=True, keep=state):  # a killed check's
                print(f"lab check: removed {item}")
            _boot_and_check(lab, record, out)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    print(f"lab check: PASS ({out / 'lab-check.json'})")
    return 0


@contextlib.contextmanager
def _check_lock() -> Any:
    """The lock a running check holds (None: another process holds it)."""
    CHECK_LOCK.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = CHECK_LOCK.open("a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield handle
    finally:
        handle.close()


def _boot_and_check(lab: Lab, record: dict[str, Any], out: Path) -> None:
    build_box(lab, CHECK_BOX, CHECK_BOX_FILE, ("--boot-only",))
    try:
        lab.vagrant("up", "--provider", "libvirt", "--no-provision", what="vagrant up",
                    timeout_s=UP_TIMEOUT_S)
        output = lab.vagrant("ssh", "-c", GUEST_SCRIPT, what="ssh checks", echo=False, timeout_s=300)
        record["guest"] = guest_report(output)
        record["problems"] = problems(record["guest"])
    finally:
        destroy_into(lab, record, out / "lab-check.json")
    print("lab check: " + ", ".join(f"{k} {v:.0f} s" for k, v in lab.steps.items()))
    print("lab check: guest " + " ".join(f"{k}={v}" for k, v in record["guest"].items()))
    if record["problems"] or record["left_after_destroy"]:
        raise RunFailed("lab check: " + "; ".join(
            [*record["problems"], *([str(record["left_after_destroy"])] if record["left_after_destroy"]
                                    else [])]))


def remove_check_vms(include_live: bool = False, keep: Path | None = None) -> list[str]:
    """For `testbed clean`: the domains and volumes a killed check left (never a user's lab;
    a running check's only with include_live), but not the state directory `keep`."""
    if shutil.which("virsh") is None:
        return []
    if not include_live and CHECK_LOCK.exists():
        with _check_lock() as lock:
            if lock is None:
                return []
    domains = virsh("list", "--all", "--name", check=False)
    if domains.returncode != 0:  # libvirt not running: no VM either
        return []
    removed = []
    for domain in domains.stdout.split():
        if domain.startswith(CHECK_PREFIX):
            virsh("destroy", domain, check=False)
            virsh("undefine", domain, "--remove-all-storage", check=False)
            removed.append(f"lab check domain {domain}")
    for volume in pool_volumes():
        if volume.startswith(CHECK_PREFIX):
            virsh("vol-delete", volume, "--pool", "default", check=False)
            removed.append(f"lab check volume {volume}")
    # vagrant-libvirt's management network, which its destroy takes down with the last VM; a
    # killed check leaves it up. Only when libvirt has no VM at all (vagrant up makes it again)
    left = virsh("list", "--all", "--name", check=False).stdout.split()
    networks = virsh("net-list", "--all", "--name", check=False).stdout.split()
    if not left and MANAGEMENT_NETWORK in networks:
        virsh("net-destroy", MANAGEMENT_NETWORK, check=False)
        virsh("net-undefine", MANAGEMENT_NETWORK, check=False)
        removed.append(f"libvirt network {MANAGEMENT_NETWORK} (no VM left on libvirt)")
    for state in Path(tempfile.gettempdir()).glob(f"{STATE_PREFIX}*"):
        if state != keep:
            shutil.rmtree(state, ignore_errors=True)
            removed.append(f"lab check state {state}")
    return removed
