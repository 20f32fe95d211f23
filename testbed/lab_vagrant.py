"""`testbed lab`: the Vagrant lab booted for real, on libvirt, under KVM or qemu's TCG.

The Vagrantfile alone was only ever validated; lab VMs rot when nobody boots them. These
subcommands set up a provider that runs on a machine without VirtualBox or KVM (Debian's
vagrant-libvirt, libvirt and qemu), build the lab's box locally from Debian packages
(scripts/lab/build_box.sh: no box catalogue needed), and run the whole cycle, timing each step:

    testbed lab setup     packages, libvirt daemons, the default network and storage pool
    testbed lab box       build mptcp-testbed/bookworm64 and add it to Vagrant (idempotent)
    testbed lab up        vagrant up (boot) and vagrant provision (the project's make setup)
    testbed lab demo      `make demo` inside, doctor's backends, result.json copied back
    testbed lab compare   the Prague demo and the CI matrix inside (netem) and on this host
    testbed lab destroy   vagrant destroy -f, then check no domain, volume or qemu is left
    testbed lab cycle     all of the above; writes lab-cycle.json with every step's time
    testbed lab check     a few minutes' boot-and-ssh check of a boot-only box (testbed/lab_check.py)

Each precondition that fails (no provider, libvirt not running, no box, too little memory) is a
one-line error naming what to run, not Vagrant's stack trace.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.command import run_command
from testbed.errors import EnvironmentProblem, RunFailed, SpecError

PROJECT = Path(__file__).resolve().parents[1]
LOCAL_BOX = "mptcp-testbed/bookworm64"
BOX_CACHE = Path(os.environ.get("TESTBED_BOX_CACHE", "/var/cache/mptcp-testbed/boxes"))
BOX_FILE = BOX_CACHE / "mptcp-testbed-bookworm64.box"
LIBVIRT_URI = "qemu:///system"
# vagrant-libvirt names domain and volume <directory>_<machine> unless TESTBED_LAB_PREFIX says
LAB_PREFIX = f"{PROJECT.name}_"
# what the lab needs on the host beyond scripts/setup.sh (which already brings vagrant and qemu)
LAB_PACKAGES = (
    "vagrant", "vagrant-libvirt", "libvirt-daemon-system", "libvirt-daemon-driver-qemu",
    "libvirt-clients", "dnsmasq-base", "qemu-system-x86", "qemu-utils", "debootstrap", "extlinux",
    "syslinux-common", "rsync", "fdisk",
)
VAGRANT_TIMEOUT_S = 3600.0
DEMO_RESULT = "results/demo/result.json"


@dataclass
class Lab:
    """Where the lab's Vagrant state lives: the project directory (its Vagrantfile)."""

    directory: Path = PROJECT
    steps: dict[str, float] = field(default_factory=dict)
    # read by the Vagrantfile (TESTBED_BOX, TESTBED_LAB_PREFIX, ...) or Vagrant (VAGRANT_DOTFILE_PATH)
    overrides: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_DEFAULT_PROVIDER="libvirt",
                    **self.overrides)

    def vagrant(self, *args: str, what: str, timeout_s: float = VAGRANT_TIMEOUT_S,
                echo: bool = True) -> str:
        """Run vagrant in the project; on failure, one line with Vagrant's own last error line."""
        started = time.monotonic()
        proc = subprocess.Popen(["vagrant", *args], cwd=self.directory, env=self.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        lines: list[str] = []
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if echo:
                    print(f"  | {line.rstrip()}", flush=True)
                if time.monotonic() - started > timeout_s:
                    proc.kill()
                    raise RunFailed(f"lab: {what} took longer than {timeout_s:.0f} s; killed")
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
        self.steps[what] = round(time.monotonic() - started, 1)
        if code != 0:
            raise RunFailed(f"lab: {what} failed (vagrant exit {code}): {_last_error(lines)}")
        return "\n".join(lines)


def _last_error(lines: list[str]) -> str:
    """The line of Vagrant's output that says what went wrong, not its Ruby backtrace."""
    useful = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith(("from ", "/"))
              and ".rb:" not in line]
    for line in reversed(useful):
        if any(word in line.lower() for word in ("error", "fail", "not ", "cannot", "unable")):
            return line[:300]
    return useful[-1][:300] if useful else "no output"


def _systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def libvirt_reachable() -> tuple[bool, str]:
    if shutil.which("virsh") is None:
        return False, "virsh missing"
    done = run_command(["virsh", "-c", LIBVIRT_URI, "version"], check=False, timeout_s=30)
    lines = (done.stderr or done.stdout).strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else ""


def check_preconditions(need_box: bool = True, memory_mb: int | None = None) -> None:
    """Everything `vagrant up` needs, each failure as one line naming what to do."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("lab: run as root (libvirt's system instance and loop devices need it)")
    if shutil.which("vagrant") is None:
        raise EnvironmentProblem("lab: vagrant is not installed; run: make lab-setup")
    plugins = run_command(["vagrant", "plugin", "list"], check=False, timeout_s=120).stdout
    if "vagrant-libvirt" not in plugins:
        raise EnvironmentProblem("lab: no Vagrant provider that runs here (vagrant-libvirt is not "
                                 "installed); run: make lab-setup")
    ok, detail = libvirt_reachable()
    if not ok:
        raise EnvironmentProblem(f"lab: libvirt is not running ({detail}); run: make lab-setup "
                                 "(or start libvirtd)")
    if need_box and not os.environ.get("TESTBED_BOX") and not box_added():
        raise EnvironmentProblem(f"lab: the box {LOCAL_BOX} is not added; run: make lab-box "
                                 "(or set TESTBED_BOX to a box Vagrant can fetch)")
    wanted = memory_mb or int(os.environ.get("TESTBED_LAB_MEMORY_MB", "4096"))
    available = _available_memory_mb()
    if available is not None and available < wanted + 512:
        raise EnvironmentProblem(f"lab: not enough memory: the VM wants {wanted} MB and {available} MB "
                                 "are available; free memory or set TESTBED_LAB_MEMORY_MB lower")


def _available_memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def box_added(name: str = LOCAL_BOX) -> bool:
    home = Path(os.environ.get("VAGRANT_HOME", Path.home() / ".vagrant.d"))
    return (home / "boxes" / name.replace("/", "-VAGRANTSLASH-")).is_dir()


def setup() -> None:
    """Install the lab's packages (only missing ones), start libvirt, its network and pool."""
    missing = [p for p in LAB_PACKAGES if not _installed(p)]
    if missing:
        print(f"lab: installing {' '.join(missing)}", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        for argv in (["apt-get", "update", "-q"], install):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise EnvironmentProblem(f"lab: {' '.join(argv[:2])} failed: {tail[0]}")
    _start_daemons()
    _ensure_network()
    _ensure_pool()
    print("lab: libvirt ready (network default, pool default)")


def _installed(package: str) -> bool:
    done = run_command(["dpkg-query", "-W", "-f=${Status}", package], check=False, timeout_s=30)
    return "install ok installed" in done.stdout


def _start_daemons() -> None:
    if libvirt_reachable()[0]:
        return
    if _systemd_running():
        run_command(["systemctl", "start", "virtlogd", "libvirtd"], what="systemctl start libvirtd")
    else:
        # containers and CI machines without systemd: the daemons detach themselves
        for daemon in ("virtlogd", "libvirtd"):
            if run_command(["pgrep", "-x", daemon], check=False).returncode != 0:
                run_command([daemon, "-d"], what=f"starting {daemon}")
    for _ in range(50):
        if libvirt_reachable()[0]:
            return
        time.sleep(0.2)
    raise EnvironmentProblem(f"lab: libvirtd did not answer on {LIBVIRT_URI} after starting it")


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_command(["virsh", "-c", LIBVIRT_URI, *args], check=check, timeout_s=60,
                       what=f"virsh {args[0]}")


def pool_volumes() -> list[str]:
    """The names of the volumes in libvirt's default pool (where vagrant-libvirt puts them)."""
    rows = virsh("vol-list", "default", check=False).stdout.splitlines()[2:]  # past the header
    return [row.split()[0] for row in rows if row.split()]


def _ensure_network() -> None:
    info = virsh("net-info", "default", check=False)
    if info.returncode != 0:
        xml = Path("/usr/share/libvirt/networks/default.xml")
        if not xml.is_file():
            raise EnvironmentProblem(f"lab: libvirt has no default network and {xml} is missing")
        virsh("net-define", str(xml))
        info = virsh("net-info", "default")
    if "Active:         yes" not in info.stdout and not _active(info.stdout):
        virsh("net-start", "default")


def _active(info: str) -> bool:
    return any(line.split(":", 1)[0].strip() == "Active" and line.split(":", 1)[1].strip() == "yes"
               for line in info.splitlines() if ":" in line)


def _ensure_pool() -> None:
    info = virsh("pool-info", "default", check=False)
    if info.returncode != 0:
        Path("/var/lib/libvirt/images").mkdir(parents=True, exist_ok=True)
        virsh("pool-define-as", "default", "dir", "--target", "/var/lib/libvirt/images")
        info = virsh("pool-info", "default")
    if not _state_running(info.stdout):
        virsh("pool-start", "default")


def _state_running(info: str) -> bool:
    return any(line.split(":", 1)[0].strip() == "State" and line.split(":", 1)[1].strip() == "running"
               for line in info.splitlines() if ":" in line)


def build_box(lab: Lab, name: str = LOCAL_BOX, box_file: Path = BOX_FILE,
              options: tuple[str, ...] = ()) -> None:
    """scripts/lab/build_box.sh, then `vagrant box add` when the file is newer than the box."""
    started = time.monotonic()
    done = subprocess.run([str(PROJECT / "scripts" / "lab" / "build_box.sh"), *options, str(box_file)],
                          check=False)
    if done.returncode != 0:
        raise RunFailed("lab: building the box failed (its message is above)")
    lab.steps["box build"] = round(time.monotonic() - started, 1)
    stamp = box_file.with_suffix(".added")
    if box_added(name) and stamp.exists() and stamp.stat().st_mtime >= box_file.stat().st_mtime:
        print(f"lab: box {name} already added")
        return
    lab.vagrant("box", "add", "--force", "--name", name, str(box_file), what="box add")
    stamp.touch()
    # vagrant-libvirt copied the replaced box into the storage pool on its first up; that copy
    # would stay there (a GB per rebuild), and the next up uploads the new one anyway
    stale = f"{name.replace('/', '-VAGRANTSLASH-')}_vagrant_box_image_"
    for volume in pool_volumes():
        if volume.startswith(stale):
            virsh("vol-delete", volume, "--pool", "default", check=False)


def up(lab: Lab) -> None:
    check_preconditions()
    lab.vagrant("up", "--provider", "libvirt", "--no-provision", what="vagrant up")
    lab.vagrant("provision", what="provision")


def demo(lab: Lab, out: Path) -> dict[str, Any]:
    """`make demo` in the VM with real netem, and its result.json back on the host."""
    doctor = lab.vagrant("ssh", "-c", "cd /vagrant && sudo .venv/bin/testbed doctor", what="doctor",
                         echo=False)
    backends = next((line.strip() for line in doctor.splitlines() if "delay=" in line), "")
    if "delay=netem" not in backends or "loss=netem" not in backends:
        raise RunFailed("lab: doctor in the VM does not report netem for delay and loss: "
                        f"{backends or doctor[-200:]}")
    try:
        lab.vagrant("ssh", "-c", "cd /vagrant && sudo make demo", what="make demo")
        demo_status = "passed"
    except RunFailed as exc:
        # `make demo` exits 1 when the run's expectations fail (a TCG guest may not reach the
        # demo's 150 Mbit/s): the result still comes back and says so; no result is an error
        demo_status = f"failed: {exc.message}"
    text = lab.vagrant("ssh", "-c", f"sudo cat /vagrant/{DEMO_RESULT}", what="fetch result", echo=False)
    start = text.find("{")
    try:
        result = json.loads(text[start:])
    except ValueError:
        raise RunFailed(f"lab: the VM's {DEMO_RESULT} is not JSON") from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    connection = (result.get("connections") or [{}])[0]
    return {"backends": backends, "result": str(out / "result.json"), "make_demo": demo_status,
            "outcome": connection.get("outcome"), "goodput_mbps": connection.get("goodput_mbps"),
            "expectations": result.get("expectations")}


def leftovers(prefix: str = LAB_PREFIX) -> list[str]:
    """Domains, volumes and qemu processes of this project's lab that still exist.

    vagrant-libvirt names domain and volume <prefix><machine>, the prefix being the project
    directory's name and "_" unless TESTBED_LAB_PREFIX sets it."""
    left = []
    domains = virsh("list", "--all", "--name", check=False).stdout.split()
    left += [f"domain {d}" for d in domains if d.startswith(prefix)]
    left += [f"volume {v}" for v in pool_volumes() if v.startswith(prefix)]
    qemu = run_command(["pgrep", "-af", f"qemu-system.*{prefix}"], check=False).stdout.strip()
    left += [f"process {line}" for line in qemu.splitlines() if line]
    return left


def destroy(lab: Lab) -> list[str]:
    lab.vagrant("destroy", "-f", what="vagrant destroy")
    left = leftovers(lab.overrides.get("TESTBED_LAB_PREFIX", LAB_PREFIX))
    if left:
        raise RunFailed(f"lab: vagrant destroy left {', '.join(left)}")
    return left


def destroy_into(lab: Lab, record: dict[str, Any], path: Path) -> None:
    """The VM goes whatever happened; what is left is recorded (not raised over the error that
    ended the run) and the record written to path."""
    try:
        record["left_after_destroy"] = destroy(lab)
    except RunFailed as exc:
        record["left_after_destroy"] = exc.message
    path.write_text(json.dumps(record, indent=1) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lab_command", required=True)
    sub.add_parser("setup", help="install the provider and start libvirt (idempotent)")
    sub.add_parser("box", help="build the lab box from Debian packages and add it (idempotent)")
    sub.add_parser("up", help="vagrant up and provision")
    demo_parser = sub.add_parser("demo", help="make demo inside; result.json copied back")
    demo_parser.add_argument("--out", type=Path, default=Path("results/lab-demo"))
    compare = sub.add_parser("compare", help="the Prague demo and the CI matrix in the VM (netem) "
                             "and on this host; side-by-side compare.md")
    compare.add_argument("--out", type=Path, default=Path("results/lab-compare"))
    compare.add_argument("--phase-seconds", type=float, default=None,
                         help="make every Prague phase this long (a short rehearsal)")
    sub.add_parser("destroy", help="vagrant destroy -f and check nothing is left")
    cycle = sub.add_parser("cycle", help="setup, box, up, demo, destroy; every step timed")
    cycle.add_argument("--out", type=Path, default=Path("results/lab-cycle"))
    check = sub.add_parser("check", help="boot a boot-only box with the project's Vagrantfile, ssh "
                           "in, try netem, destroy (a few minutes; the suite's lab test)")
    check.add_argument("--out", type=Path, default=Path("results/lab-check"))


def run(args: argparse.Namespace) -> int:
    lab = Lab()
    command = args.lab_command
    if command == "setup":
        setup()
    elif command == "box":
        build_box(lab)
    elif command == "up":
        up(lab)
    elif command == "demo":
        check_preconditions(need_box=False, memory_mb=0)
        print(json.dumps(demo(lab, args.out)))
    elif command == "compare":
        from testbed.lab_compare import lab_compare

        check_preconditions(need_box=False, memory_mb=0)
        return lab_compare(lab, args.out.resolve(), args.phase_seconds)
    elif command == "destroy":
        destroy(lab)
        print("lab: destroyed; no domain, volume or qemu of the lab left")
    elif command == "cycle":
        return cycle(lab, args.out)
    elif command == "check":
        from testbed.lab_check import lab_check

        return lab_check(args.out)
    else:  # argparse keeps us from here
        raise SpecError(f"lab: unknown subcommand {command!r}")
    if lab.steps:
        print("lab: " + ", ".join(f"{k} {v:.0f} s" for k, v in lab.steps.items()))
    return 0


def cycle(lab: Lab, out: Path) -> int:
    record: dict[str, Any] = {"format": "mptcp-testbed-lab-cycle", "version": 1, "steps": lab.steps}
    out.mkdir(parents=True, exist_ok=True)
    try:
        setup()
        build_box(lab)
        up(lab)
        record["demo"] = demo(lab, out)
    finally:
        destroy_into(lab, record, out / "lab-cycle.json")
    if record["left_after_destroy"]:
        raise RunFailed(str(record["left_after_destroy"]))
    print("lab: " + ", ".join(f"{k} {v:.0f} s" for k, v in lab.steps.items()))
    return 0
