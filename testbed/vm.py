"""`testbed vm run -- COMMAND`: run COMMAND as root in a throwaway VM whose kernel has sch_netem.

The development and CI machines run a kernel without netem, so the netem link-emulation path
(HTB class -> netem leaf) could never run there. This boots a stock Debian kernel (the
`linux-image-amd64` package, installed only for its /boot/vmlinuz-* and /lib/modules; the host's
boot is not touched) with virtme-ng under qemu. virtme-ng mounts the host's root filesystem
read-only with copy-on-write overlays, so the same paths exist inside: `.venv/bin/python`,
mininet, nft, iperf3. The project directory (and every --rwdir) is mounted read-write at its own
path, so results land on the host. The VM gets no network device at all: nothing it sends can
leave it.

Acceleration: KVM where it really boots a kernel, TCG otherwise. A usable-looking /dev/kvm is
not enough (nested KVM may crash qemu on an MSR or hang at boot), so `auto` boots `true` under
KVM once with a short deadline and caches the verdict per (host kernel, qemu, guest kernel).

Exit status: the guest writes a "started" marker and COMMAND's exit status into a private
read-write directory, so a VM that never booted, a guest that died mid-command and a command
that failed are told apart (the first two are errors naming what to look at).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from testbed import kernels
from testbed.errors import EnvironmentProblem, RunFailed, SpecError, TestbedError
from testbed.net.state import RunState, new_run_id, work_dir_of

PROJECT_DIR = Path(__file__).resolve().parents[1]
ACCELS = ("auto", "kvm", "tcg")
KVM_PROBE_TIMEOUT_S = 45.0  # a KVM boot takes a few seconds; a hung nested KVM never finishes
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_MEMORY = "2G"
EXIT_GUEST_CWD = 125
EXIT_GUEST_NIC = 124
PT_INTERP = 3
INSTALL_HINT = "`make setup` installs it"
CACHED_ROOT_TAG = "tbcache"
CACHED_ROOT_MOUNT = "/run/testbed-vm-cached-root"
SAVED_MODULES_MOUNT = "/run/testbed-vm-modules"
GUEST_SCRIPT = "guest.sh"
_VERSION_PART = re.compile(r"\d+|[a-z]+")


@dataclass(frozen=True)
class KernelImage:
    """A bootable kernel and the module tree that must match it (sch_netem lives there)."""

    path: Path
    release: str
    modules_dir: Path
    fetched: bool = False  # unpacked by `testbed kernels fetch`: the guest must be given its modules


@dataclass(frozen=True)
class Tools:
    """Host programs the VM needs; found once, named in every error."""

    vng: Path
    qemu: Path
    busybox: Path


@dataclass(frozen=True)
class AccelChoice:
    accel: str  # "kvm" | "tcg"
    reason: str


@dataclass(frozen=True)
class GuestNic:
    """A virtio NIC on a tap device of the namespace qemu runs in (prototype, issue 14 point 2).

    The guest finds it by MAC, names it `name` and gives it `addresses` (CIDR)."""

    tap: str
    mac: str
    name: str
    addresses: tuple[str, ...] = ()


@dataclass
class VmPlan:
    """Everything one VM run needs; building the qemu command is a pure function of it."""

    kernel: KernelImage
    tools: Tools
    accel: str
    command: list[str]
    cwd: Path
    state_dir: Path
    rw_dirs: list[Path] = field(default_factory=list)
    memory: str = DEFAULT_MEMORY
    cpus: int = 2
    verbose: bool = False
    cached_mounts: bool = True
    netns: str | None = None  # run qemu in this network namespace (where the NICs' taps are)
    nics: list[GuestNic] = field(default_factory=list)


def _version_key(release: str) -> tuple:
    """Orders '6.1.0-56-amd64' after '6.1.0-9-amd64' (numeric parts compare as numbers)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _VERSION_PART.findall(release))


def _has_netem(modules_dir: Path) -> bool:
    sched = modules_dir / "kernel" / "net" / "sched"
    return any(sched.glob("sch_netem.ko*"))


def find_kernels(boot_dir: Path = Path("/boot"),
                 modules_root: Path = Path("/lib/modules")) -> list[KernelImage]:
    """Kernels in boot_dir whose module tree has sch_netem, newest first."""
    found = []
    for image in boot_dir.glob("vmlinuz-*"):
        release = image.name.removeprefix("vmlinuz-")
        modules_dir = modules_root / release
        if image.is_file() and _has_netem(modules_dir):
            found.append(KernelImage(image, release, modules_dir))
    return sorted(found, key=lambda k: _version_key(k.release), reverse=True)


def is_kernel_selector(text: str) -> bool:
    """'6.12', 'newest', '6.12.117+deb13-amd64' name a fetched kernel; anything with a slash, or an
    existing file, is a vmlinuz path."""
    return "/" not in text and not Path(text).exists() and re.fullmatch(kernels.SELECTOR, text) is not None


def fetched_kernel(selector: str, cache: Path | None = None) -> KernelImage:
    """A kernel `testbed kernels fetch` unpacked: its vmlinuz and its own module tree (virtme-ng
    finds lib/modules/RELEASE by walking up from the vmlinuz and links it into the guest)."""
    kernel = kernels.find_fetched(selector, cache or kernels.cache_dir())
    if not _has_netem(kernel.modules_dir):
        raise EnvironmentProblem(f"vm: fetched kernel {kernel.release} has no sch_netem module under "
                                 f"{kernel.modules_dir}")
    return KernelImage(kernel.vmlinuz, kernel.release, kernel.modules_dir, fetched=True)


def choose_kernel(explicit: str | None, boot_dir: Path = Path("/boot"),
                  modules_root: Path = Path("/lib/modules")) -> KernelImage:
    """The kernel to boot: a fetched one by selector, a vmlinuz path, else the newest in /boot
    with netem. Errors say what to install or fetch."""
    if explicit and is_kernel_selector(explicit):
        return fetched_kernel(explicit)
    if explicit:
        image = Path(explicit)
        if not image.is_file():
            raise SpecError(f"vm: --kernel {explicit}: no such file")
        release = image.name.removeprefix("vmlinuz-")
        modules_dir = modules_root / release
        if not modules_dir.is_dir():
            raise EnvironmentProblem(
                f"vm: kernel {image} has no module tree {modules_dir} (the image must be named "
                f"vmlinuz-RELEASE and its modules installed, as Debian's linux-image-* packages do)")
        if not _has_netem(modules_dir):
            raise EnvironmentProblem(f"vm: kernel {image} has no sch_netem module under {modules_dir}")
        return KernelImage(image, release, modules_dir)
    kernels = find_kernels(boot_dir, modules_root)
    if not kernels:
        raise EnvironmentProblem(
            f"vm: no kernel with sch_netem in {boot_dir} (vmlinuz-* with {modules_root}/RELEASE/"
            f"kernel/net/sched/sch_netem.ko*): apt-get install linux-image-amd64 ({INSTALL_HINT}; "
            f"it only adds files, the host keeps booting its own kernel), or pass --kernel")
    return kernels[0]


def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP header (no dynamic loader needed): the only
    kind of busybox that works inside virtme-ng's initramfs, which copies no libraries."""
    try:
        with open(path, "rb") as elf:
            header = elf.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit only: x86-64 hosts
                return False
            endian = "<" if header[5] == 1 else ">"
            phoff, = struct.unpack_from(endian + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 54)
            elf.seek(phoff)
            table = elf.read(phentsize * phnum)
    except OSError:
        return False
    types = [struct.unpack_from(endian + "I", table, i * phentsize)[0] for i in range(phnum)]
    return PT_INTERP not in types


def find_tools(which: Callable[[str], str | None] = shutil.which,
               venv_bin: Path = Path(sys.executable).parent) -> Tools:
    """qemu, virtme-ng and a busybox for virtme's initramfs, or one error listing all that is missing."""
    missing = []
    vng = venv_bin / "vng" if (venv_bin / "vng").is_file() else which("vng")
    if vng is None:
        missing.append(f"virtme-ng (`vng`): pip install virtme-ng into the project's .venv ({INSTALL_HINT})")
    qemu = which("qemu-system-x86_64")
    if qemu is None:
        missing.append(f"qemu (`qemu-system-x86_64`): apt-get install qemu-system-x86 ({INSTALL_HINT})")
    busybox = which("busybox-static") or which("busybox")
    if busybox is None or not is_static_elf(Path(busybox)):
        found = f"{busybox} is dynamically linked" if busybox else "none found"
        missing.append(f"a static busybox (virtme-ng's initramfs needs one; {found}): "
                       f"apt-get install busybox-static ({INSTALL_HINT})")
    if missing:
        raise EnvironmentProblem("vm: missing " + "; ".join(missing))
    return Tools(Path(vng), Path(qemu), Path(busybox))  # type: ignore[arg-type]


def _cached_trees(venv_dir: Path | None) -> list[Path]:
    """Read-only trees worth serving from the cached export: the interpreter, its libraries and
    the venv (each Python start walks thousands of paths there)."""
    trees = [Path("/usr")]
    if venv_dir is not None and venv_dir != Path(sys.base_prefix).resolve():
        trees.append(venv_dir)
    return trees


def nic_setup(nics: Sequence[GuestNic]) -> list[str]:
    """Guest shell lines: load virtio_net, then name and address each NIC found by its MAC."""
    if not nics:
        return []
    lines = ["modprobe virtio_net 2>/dev/null; udevadm settle 2>/dev/null || sleep 1"]
    for nic in nics:
        name, mac = shlex.quote(nic.name), shlex.quote(nic.mac.lower())
        missing = shlex.quote(f"testbed vm: no NIC with MAC {nic.mac}")
        addresses = " && ".join(f"ip addr add {shlex.quote(a)} dev {name}" for a in nic.addresses)
        lines.append(
            f"dev=$(grep -l {mac} /sys/class/net/*/address | head -n1 | cut -d/ -f5); "
            f"{{ [ -n \"$dev\" ] && ip link set \"$dev\" down && ip link set \"$dev\" name {name} "
            f"&& {addresses + ' && ' if addresses else ''}ip link set {name} up; }} "
            f"|| {{ echo {missing} >&2; exit {EXIT_GUEST_NIC}; }}")
    return lines


def guest_script(command: Sequence[str], cwd: Path, state_dir: Path, venv_bin: Path,
                 cached_trees: Sequence[Path] = (), modules_tree: Path | None = None,
                 nics: Sequence[GuestNic] = ()) -> str:
    """The shell text virtme-ng runs in the guest: marker, cached mounts, cwd, PATH, COMMAND, status.

    virtme-ng's root is 9p without caching: under TCG every path lookup is a round trip of
    several milliseconds and importing pyroute2 takes ~30 s. A second, read-only export of / is
    mounted with cache=loose (safe: nothing writes those trees during a run) and bound over the
    read-only trees; the project directory itself stays on the uncached read-write mount.

    A fetched kernel's `modules_tree` lives under /var/cache, which the guest covers with a tmpfs,
    so it is bound back from the export. virtme-ng links it from a tmpfs it mounts on
    /lib/modules (= /usr/lib/modules); binding the cached /usr would hide that tmpfs, so it is
    set aside first and bound back on top.
    """
    state = shlex.quote(str(state_dir))
    lines = [f"echo up > {state}/started"]
    if cached_trees or modules_tree:
        mount = shlex.quote(CACHED_ROOT_MOUNT)
        steps = [f"mkdir -p {mount}",
                 f"mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=524288 "
                 f"{CACHED_ROOT_TAG} {mount}"]
        binds = [f"mount --bind {mount}{shlex.quote(str(tree))} {shlex.quote(str(tree))}"
                 for tree in cached_trees]
        if modules_tree:
            saved = shlex.quote(SAVED_MODULES_MOUNT)
            if binds:
                binds = [f"mkdir -p {saved}", f"mount --bind /lib/modules {saved}", *binds,
                         f"mount --bind {saved} /lib/modules"]
            tree = shlex.quote(str(modules_tree))
            binds += [f"mkdir -p {tree}", f"mount --bind {mount}{tree} {tree}"]
        warning = "testbed vm: cached read-only mounts failed; running uncached (slower)" + (
            ", without the kernel's modules" if modules_tree else "")
        lines.append(f"{{ {' && '.join(steps + binds)}; }} || echo {shlex.quote(warning)} >&2")
    lines += nic_setup(nics)
    lines += [
        f"cd {shlex.quote(str(cwd))} || exit {EXIT_GUEST_CWD}",
        f"export PATH={shlex.quote(str(venv_bin))}:\"$PATH\" TESTBED_IN_VM=1",
        shlex.join(command),
        "rc=$?",
        "sync",  # results written by COMMAND reach the host before the guest powers off
        f"echo $rc > {state}/status",
        "exit $rc",
    ]
    return "\n".join(lines)


def _own_modules_tree(kernel: KernelImage) -> Path | None:
    """A fetched kernel's module tree (in the cache, not /lib/modules): the guest must be given it."""
    return kernel.modules_dir if kernel.fetched else None


def plan_guest_script(plan: VmPlan, venv_bin: Path = Path(sys.executable).parent) -> str:
    """The guest script for a plan (execute() writes it to state_dir/GUEST_SCRIPT)."""
    cached = _cached_trees(venv_bin.parent.resolve()) if plan.cached_mounts else []
    return guest_script(plan.command, plan.cwd, plan.state_dir, venv_bin, cached,
                        _own_modules_tree(plan.kernel), plan.nics)


def build_vng_argv(plan: VmPlan, venv_bin: Path = Path(sys.executable).parent) -> list[str]:
    """The virtme-ng command line for a plan. No --network option: qemu gets `-net none`."""
    argv = [str(plan.tools.vng), "--run", str(plan.kernel.path), "--qemu", str(plan.tools.qemu),
            "--busybox", str(plan.tools.busybox), "--memory", plan.memory, "--cpus", str(plan.cpus),
            "--user", "root", "--cwd", str(plan.cwd)]
    if plan.accel == "tcg":
        # TCG guests pick the HPET, whose every read is an emulated MMIO exit (and the vDSO
        # cannot use it): the TSC is cheap, constant-rate and monotonic under TCG.
        argv += ["--disable-kvm", "--append=clocksource=tsc", "--append=tsc=reliable"]
    for directory in [*plan.rw_dirs, plan.state_dir]:
        argv.append(f"--rwdir={directory}")
    argv.append("--verbose" if plan.verbose else "--quiet")
    if plan.cached_mounts or _own_modules_tree(plan.kernel):
        # vng splices this into a shell command line: no spaces or quotes inside the options
        argv.append(f"--qemu-opts=-fsdev local,id=tbcache,path=/,security_model=none,readonly=on,"
                    f"multidevs=remap -device virtio-9p-pci,fsdev=tbcache,mount_tag={CACHED_ROOT_TAG}")
    if plan.nics:  # a VM endpoint: its vCPU threads get names ("CPU 0/TCG") to measure their CPU use
        argv.append("--qemu-opts=-name debug-threads=on")
    for index, nic in enumerate(plan.nics):
        # offloads off: every segment the guest sends is one the topology carries
        argv.append(f"--qemu-opts=-netdev tap,id=tbn{index},ifname={nic.tap},script=no,downscript=no "
                    f"-device virtio-net-pci,netdev=tbn{index},mac={nic.mac},csum=off,guest_csum=off,"
                    f"guest_tso4=off,host_tso4=off,guest_ufo=off,host_ufo=off")
    # the script itself is a file in the state directory: virtme-ng carries --exec text in the
    # kernel command line (base64), which x86 cuts at 2048 bytes and a cut one never boots
    argv += ["--exec", f"sh {shlex.quote(str(plan.state_dir / GUEST_SCRIPT))}"]
    return argv


def _vng_env(tools: Tools) -> dict[str, str]:
    """vng starts `virtme-run` through PATH: its own directory must come first."""
    env = dict(os.environ)
    env["PATH"] = f"{tools.vng.parent}{os.pathsep}{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return env


@dataclass(frozen=True)
class VmOutcome:
    """What came back: the host-side vng status, whether the guest started, COMMAND's status."""

    vng_status: int
    started: bool
    command_status: int | None
    seconds: float
    output: str = ""  # only when captured (the KVM probe); normal runs pass output through


def _kill_group(process: subprocess.Popen) -> None:
    """End the vng/qemu process group this module started (its own session, by id)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _pump(source: IO[bytes], sink_fd: int | None, captured: list[bytes]) -> None:
    """Copy one guest stream as it arrives: to a host fd, or into `captured`."""
    while chunk := source.read1(65536):  # type: ignore[attr-defined]
        if sink_fd is None:
            captured.append(chunk)
        else:
            view = memoryview(chunk)
            while view:
                view = view[os.write(sink_fd, view):]
    source.close()


def _launch(plan: VmPlan, sink_fds: tuple[int, int] | None, captured: list[bytes],
            stdin: int | None = None) -> tuple[subprocess.Popen, list[threading.Thread]]:
    """Write the guest script and start vng (in plan.netns if set) in its own session, its
    stdout and stderr pumped to `sink_fds` (or into `captured`)."""
    plan.state_dir.mkdir(parents=True, exist_ok=True)
    (plan.state_dir / GUEST_SCRIPT).write_text(plan_guest_script(plan))
    argv = build_vng_argv(plan)
    if plan.netns:
        argv = ["ip", "netns", "exec", plan.netns, *argv]
    process = subprocess.Popen(argv, env=_vng_env(plan.tools), start_new_session=True, stdin=stdin,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pumps = [threading.Thread(target=_pump, daemon=True,
                              args=(stream, None if sink_fds is None else fd, captured))
             for stream, fd in zip((process.stdout, process.stderr), sink_fds or (None, None), strict=True)]
    for pump in pumps:
        pump.start()
    return process, pumps


@dataclass
class RunningVm:
    """A VM started by `start` that the caller stops with `stop` (a VM endpoint's lifetime)."""

    process: subprocess.Popen
    pumps: list[threading.Thread]

    def alive(self) -> bool:
        return self.process.poll() is None


def start(plan: VmPlan, log_fd: int) -> RunningVm:
    """Boot in the background; the guest's console output (stdout and stderr) goes to log_fd."""
    process, pumps = _launch(plan, (log_fd, log_fd), [], stdin=subprocess.DEVNULL)
    return RunningVm(process, pumps)


def stop(running: RunningVm) -> None:
    """Kill the VM's process group (by its id) and wait for it and its output pumps."""
    _kill_group(running.process)
    for pump in running.pumps:
        pump.join(timeout=5)


def execute(plan: VmPlan, timeout_s: float, capture: bool = False,
            stdout_fd: int = 1, stderr_fd: int = 2,
            on_start: Callable[[int], None] | None = None) -> VmOutcome:
    """Boot, run, power off. Raises RunFailed on timeout after killing the VM. `on_start`
    gets the VM's process group id as soon as it exists (a run record, for `testbed clean`).

    qemu reopens its stdout and stderr through /proc/self/fd as several files of its own; were
    those regular files, each reopening would write from offset 0 over the others. Pipes, pumped
    here to the caller's fds, keep every byte in order.
    """
    started_at = time.monotonic()
    captured: list[bytes] = []
    process, pumps = _launch(plan, None if capture else (stdout_fd, stderr_fd), captured,
                             stdin=subprocess.DEVNULL if capture else None)
    try:
        if on_start is not None:
            on_start(process.pid)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise RunFailed(f"vm: no result after {timeout_s:.0f} s ({plan.accel}); the VM was killed") from None
    except BaseException:
        _kill_group(process)
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=5)
    status_file = plan.state_dir / "status"
    status = status_file.read_text().strip() if status_file.exists() else ""
    return VmOutcome(vng_status=process.returncode, started=(plan.state_dir / "started").exists(),
                     command_status=int(status) if status.isdigit() else None,
                     seconds=time.monotonic() - started_at,
                     output=b"".join(captured).decode(errors="replace"))


def kvm_device_usable(device: Path = Path("/dev/kvm")) -> tuple[bool, str]:
    if not device.exists():
        return False, f"{device} does not exist (no hardware virtualisation here)"
    if not os.access(device, os.R_OK | os.W_OK):
        return False, f"{device} is not readable and writable by this user"
    return True, f"{device} is usable"


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "testbed" / "vm-accel.json"


def _probe_key(tools: Tools, kernel: KernelImage) -> str:
    qemu = tools.qemu.resolve()
    stat = qemu.stat()
    return f"host={os.uname().release} qemu={qemu}:{stat.st_size}:{int(stat.st_mtime)} guest={kernel.release}"


def probe_kvm(kernel: KernelImage, tools: Tools, timeout_s: float = KVM_PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Boot `true` under KVM: only a guest that really started and finished proves KVM works."""
    with tempfile.TemporaryDirectory(prefix="testbed-vm-probe-") as state:
        plan = VmPlan(kernel=kernel, tools=tools, accel="kvm", command=["true"], cwd=Path("/"),
                      state_dir=Path(state), memory="512M", cpus=1)
        try:
            outcome = execute(plan, timeout_s, capture=True)
        except RunFailed:
            return False, f"KVM boot did not finish within {timeout_s:.0f} s (nested KVM hang?)"
    if outcome.started and outcome.command_status == 0:
        return True, f"KVM booted the guest in {outcome.seconds:.1f} s"
    last = outcome.output.strip().splitlines()[-1:] or [f"exit {outcome.vng_status}"]
    return False, f"KVM boot failed ({last[0][:200]})"


def choose_accel(requested: str, kernel: KernelImage, tools: Tools, reprobe: bool = False,
                 device_check: Callable[[], tuple[bool, str]] = kvm_device_usable,
                 probe: Callable[[KernelImage, Tools], tuple[bool, str]] = probe_kvm,
                 cache_file: Path | None = None) -> AccelChoice:
    """kvm or tcg: forced by the user, else KVM only if it has been seen to boot this kernel."""
    if requested not in ACCELS:
        raise SpecError(f"vm: --accel {requested!r}: choose one of {', '.join(ACCELS)}")
    if requested == "tcg":
        return AccelChoice("tcg", "forced (--accel tcg)")
    usable, detail = device_check()
    if requested == "kvm":
        if not usable:
            raise EnvironmentProblem(f"vm: --accel kvm but {detail}")
        return AccelChoice("kvm", "forced (--accel kvm)")
    if not usable:
        return AccelChoice("tcg", detail)
    cache_path = cache_file or _cache_file()
    key = _probe_key(tools, kernel)
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not reprobe and key in cache:
        entry = cache[key]
        return AccelChoice(entry["accel"], f"{entry['reason']} (cached in {cache_path})")
    works, reason = probe(kernel, tools)
    choice = AccelChoice("kvm" if works else "tcg", reason)
    cache[key] = {"accel": choice.accel, "reason": reason}
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=2))
    except OSError as exc:  # a read-only home only costs a re-probe next time
        print(f"testbed vm: cannot cache the KVM verdict in {cache_path}: {exc}", file=sys.stderr)
    return choice


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `testbed vm run [options] -- COMMAND...` (the lead wires this into the main CLI)."""
    parser.add_argument("--kernel", help="a kernel fetched by `testbed kernels fetch` (6.1, 6.12, newest, "
                                         "or its release), or a vmlinuz-RELEASE path (default: the "
                                         "newest in /boot whose modules include sch_netem)")
    parser.add_argument("--accel", choices=ACCELS, default=os.environ.get("TESTBED_VM_ACCEL", "auto"),
                        help="kvm, tcg (software emulation, 20-60x slower CPU) or auto: KVM if a "
                             "probe boot works, cached (default: $TESTBED_VM_ACCEL or auto)")
    parser.add_argument("--reprobe", action="store_true", help="ignore the cached KVM verdict")
    parser.add_argument("--memory", default=DEFAULT_MEMORY, help="guest memory, qemu syntax (default 2G)")
    parser.add_argument("--cpus", type=int, default=min(os.cpu_count() or 1, 4),
                        help="guest CPUs (default: host CPUs, at most 4)")
    parser.add_argument("--rwdir", action="append", default=[], metavar="DIR",
                        help="another host directory the guest may write (same path inside); "
                             "the project directory always is")
    parser.add_argument("--cwd", help="directory COMMAND starts in (default: the current one)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help="kill the VM after this long, boot included (default 3600)")
    parser.add_argument("--verbose", action="store_true", help="show the guest kernel's console")
    parser.add_argument("vm_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                        help="what to run inside, as root")


def _plan_from_args(args: argparse.Namespace, state_dir: Path) -> VmPlan:
    command = list(args.vm_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise SpecError("vm run: give a command after --, e.g. testbed vm run -- testbed doctor")
    if os.geteuid() != 0:
        raise EnvironmentProblem("vm run: must run as root (the guest runs COMMAND as root over the "
                                 "host's files; use sudo)")
    if args.cpus < 1:
        raise SpecError(f"vm run: --cpus {args.cpus}: need at least 1")
    if args.timeout <= 0:
        raise SpecError(f"vm run: --timeout {args.timeout}: must be positive")
    rw_dirs = [PROJECT_DIR]
    for raw in args.rwdir:
        directory = Path(raw).resolve()
        if not directory.is_dir():
            raise SpecError(f"vm run: --rwdir {raw}: not a directory")
        rw_dirs.append(directory)
    cwd = Path(args.cwd).resolve() if args.cwd else Path.cwd()
    if not cwd.is_dir():
        raise SpecError(f"vm run: --cwd {args.cwd}: not a directory")
    kernel = choose_kernel(args.kernel)
    tools = find_tools()
    accel = choose_accel(args.accel, kernel, tools, reprobe=args.reprobe)
    print(f"testbed vm: kernel {kernel.release}, {accel.accel} ({accel.reason})", file=sys.stderr, flush=True)
    return VmPlan(kernel=kernel, tools=tools, accel=accel.accel, command=command, cwd=cwd,
                  state_dir=state_dir, rw_dirs=rw_dirs, memory=args.memory, cpus=args.cpus,
                  verbose=args.verbose)


def run(args: argparse.Namespace) -> int:
    """`testbed vm run`: COMMAND's exit status, or an error when the VM itself failed."""
    from testbed.runner import sigterm_as_interrupt

    # SIGTERM unwinds like Ctrl-C, through execute()'s kill of the VM's process group; after
    # a SIGKILL, `testbed clean` finds the group and the state directory from the run record
    run_id = new_run_id()
    with sigterm_as_interrupt():
        plan = _plan_from_args(args, work_dir_of(run_id))
        state = RunState.create(run_id)
        try:
            outcome = execute(plan, args.timeout, on_start=state.add_process_group)
        finally:
            state.remove()
    if not outcome.started:
        raise RunFailed(f"vm: the guest never started (virtme-ng exit {outcome.vng_status}, {plan.accel}); "
                        f"rerun with --verbose to see the kernel console"
                        + ("" if plan.accel == "tcg" else ", or try --accel tcg"))
    if outcome.command_status is None:
        raise RunFailed(f"vm: the guest stopped before COMMAND finished (virtme-ng exit "
                        f"{outcome.vng_status}); rerun with --verbose to see the kernel console")
    if outcome.command_status == EXIT_GUEST_CWD and not plan.cwd.is_dir():
        raise RunFailed(f"vm: cannot enter {plan.cwd} inside the guest")
    return outcome.command_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.vm",
                                     description="run a command inside a VM with a netem kernel")
    sub = parser.add_subparsers(dest="action", required=True)
    add_arguments(sub.add_parser("run", help="boot, run COMMAND as root, power off"))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TestbedError as exc:
        print(f"testbed: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("testbed vm: interrupted; the VM was killed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
