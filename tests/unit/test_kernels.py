"""Kernels as a resource without the network: Debian version order (checked against dpkg itself),
selector matching and its errors, package index parsing, the host mirror, the cache layout and
the unpack plumbing on real .deb files built here with dpkg-deb."""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed import kernels, vm
from testbed.errors import EnvironmentProblem, SpecError

# the shape of `apt-cache madison` on the four suites (trimmed from a real run)
MADISON = """\
linux-image-6.1.0-47-amd64-unsigned |  6.1.170-3 | http://d.example/debian bookworm/main amd64 Packages
linux-image-6.1.0-50-amd64-unsigned |  6.1.176-1 | http://d.example/debian bookworm/main amd64 Packages
linux-image-6.1.0-50-amd64 |  6.1.176-1 | http://d.example/debian bookworm/main amd64 Packages
linux-image-6.1.0-50-rt-amd64 |  6.1.176-1 | http://d.example/debian bookworm/main amd64 Packages
linux-image-6.12.95+deb12-amd64 | 6.12.95-1~bpo12+1 | http://d.example/d bookworm-backports/main amd64 P
linux-image-6.12.117+deb13-amd64-unsigned | 6.12.117-1 | http://d.example/debian trixie/main amd64 Packages
linux-image-6.12.117+deb13-cloud-amd64 | 6.12.117-1 | http://d.example/debian trixie/main amd64 Packages
linux-image-6.12.117+deb13-amd64 | 6.12.117-1 | http://d.example/debian trixie/main amd64 Packages
linux-image-7.2.13+deb14-amd64 |   7.2.13-1 | http://d.example/debian sid/main amd64 Packages
not a madison line
"""

VERSION_PAIRS = [
    ("6.12.95-1~bpo12+1", "6.12.95-1"), ("6.1.0-9", "6.1.0-56"), ("1.0~rc1", "1.0"),
    ("6.1.176-1", "6.12.95-1~bpo12+1"), ("1:0.1", "2.0"), ("7.2.13-1", "7.2.13-1"),
    ("1.0a", "1.0+"), ("1.0", "1.0.0"), ("2.30-1", "2.3-1"), ("1.0-1", "1.0-1.1"), ("0~", "0"),
]


@pytest.mark.parametrize(("a", "b"), VERSION_PAIRS)
def test_version_order_agrees_with_dpkg(a: str, b: str) -> None:
    if shutil.which("dpkg") is None:
        pytest.skip("dpkg is not installed: nothing to check the order against")
    for left, right in ((a, b), (b, a)):
        ours = kernels.compare_versions(left, right)
        for relation, holds in (("lt", ours < 0), ("eq", ours == 0), ("gt", ours > 0)):
            dpkg = subprocess.run(["dpkg", "--compare-versions", left, relation, right]).returncode == 0
            assert holds == dpkg, f"{left} {relation} {right}: dpkg says {dpkg}"


def test_madison_keeps_the_plain_flavour_and_prefers_unsigned() -> None:
    found = {(c.release, c.suite): c for c in kernels.parse_madison(MADISON)}
    assert set(found) == {("6.1.0-47-amd64", "bookworm"), ("6.1.0-50-amd64", "bookworm"),
                          ("6.12.95+deb12-amd64", "bookworm-backports"),
                          ("6.12.117+deb13-amd64", "trixie"), ("7.2.13+deb14-amd64", "sid")}
    assert found[("6.1.0-50-amd64", "bookworm")].package == "linux-image-6.1.0-50-amd64-unsigned"
    assert found[("7.2.13+deb14-amd64", "sid")].package == "linux-image-7.2.13+deb14-amd64"
    assert found[("6.12.95+deb12-amd64", "bookworm-backports")].upstream == "6.12.95"


@pytest.mark.parametrize(("selector", "release"), [
    ("6.1", "6.1.0-50-amd64"),  # 6.1 is 6.1.x, never 6.12.x
    ("6.1.170", "6.1.0-47-amd64"),
    ("6.12", "6.12.117+deb13-amd64"),  # trixie's newer build beats the backport
    ("6.12.95", "6.12.95+deb12-amd64"),
    ("6", "6.12.117+deb13-amd64"),
    ("7", "7.2.13+deb14-amd64"),
    ("newest", "7.2.13+deb14-amd64"),
    ("6.1.0-47-amd64", "6.1.0-47-amd64"),  # a release as uname -r prints it
])
def test_selector_picks_the_newest_match(selector: str, release: str) -> None:
    assert kernels.select_candidate(kernels.parse_madison(MADISON), selector).release == release


def test_unavailable_selector_lists_what_is_available() -> None:
    with pytest.raises(SpecError) as caught:
        kernels.select_candidate(kernels.parse_madison(MADISON), "6.6")
    message = caught.value.message
    assert "'6.6'" in message and "\n" not in message
    assert "7.2.13 (sid), 6.12.117 (trixie), 6.12.95 (bookworm-backports), 6.1.176 (bookworm)" in message
    with pytest.raises(SpecError, match="not a kernel selector"):
        kernels.select_candidate(kernels.parse_madison(MADISON), "../6.1")
    with pytest.raises(SpecError, match="available: nothing"):
        kernels.select_candidate([], "newest")


def test_host_mirror_from_one_line_and_deb822_sources(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kernels.MIRROR_ENV, raising=False)
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\n"
                        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n")
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: https://ftp.example/debian\nSuites: bookworm\n")
    other = tmp_path / "other.list"
    other.write_text("deb https://packages.example/apt stable main\n")
    assert kernels.host_mirror([other, one_line]) == "http://mirror.example/debian"
    assert kernels.host_mirror([deb822]) == "https://ftp.example/debian"
    with pytest.raises(EnvironmentProblem, match="TESTBED_DEBIAN_MIRROR"):
        kernels.host_mirror([other, tmp_path / "missing"])
    monkeypatch.setenv(kernels.MIRROR_ENV, "http://local/debian/")
    assert kernels.host_mirror([one_line]) == "http://local/debian"


def test_private_apt_redirects_every_directory(tmp_path: Path) -> None:
    apt = kernels.PrivateApt(tmp_path / "apt", "http://mirror.example/debian")
    options = dict(arg.split("=", 1) for arg in apt.options() if arg != "-o")
    for key in ("Dir::Etc::SourceList", "Dir::Etc::SourceParts", "Dir::State", "Dir::State::status",
                "Dir::Cache", "Dir::Cache::Archives", "Dir::Etc::PreferencesParts"):
        assert options[key].startswith(str(tmp_path / "apt")), key
    apt._prepare()
    sources = (tmp_path / "apt" / "etc" / "sources.list").read_text().splitlines()
    assert [line.split()[-2] for line in sources] == list(kernels.SUITES)
    assert all("http://mirror.example/debian" in line for line in sources)
    assert (tmp_path / "apt" / "status").read_text() == ""  # nothing is installed as far as it knows


def test_config_features() -> None:
    text = "CONFIG_MPTCP=y\n# CONFIG_MPTCP_IPV6 is not set\nCONFIG_NET_SCH_NETEM=m\n"
    features = kernels.parse_config(text)
    assert features["CONFIG_MPTCP"] == "y" and features["CONFIG_NET_SCH_NETEM"] == "m"
    assert features["CONFIG_MPTCP_IPV6"] == "n"


def _fake_image(tmp_path: Path, strings: list[str]) -> Path:
    """A bzImage stand-in: a setup header, then an xz stream holding 'Linux version' and names."""
    vmlinux = b"\0Linux version 9.9\0" + b"".join(b"\0" + s.encode() + b"\0" for s in strings)
    image = tmp_path / "vmlinuz-test"
    image.write_bytes(b"MZ" + bytes(500) + lzma.compress(vmlinux, format=lzma.FORMAT_XZ) + bytes(64))
    return image


def test_sysctls_read_statically_from_the_image(tmp_path: Path) -> None:
    image = _fake_image(tmp_path, ["checksum_enabled", "pm_type", "tcp_fastopen_blackhole_timeout_sec"])
    assert kernels.image_sysctls(image) == ["checksum_enabled", "pm_type"]  # whole strings only
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"MZ" + bytes(1000))
    assert kernels.image_sysctls(garbage) is None


def _build_deb(tmp_path: Path, name: str, version: str, files: dict[str, bytes],
               depends: str = "") -> Path:
    """A real .deb made with dpkg-deb --build."""
    tree = tmp_path / f"build-{name}"
    (tree / "DEBIAN").mkdir(parents=True)
    control = f"Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: t <t@t>\n" \
              f"Description: test\n" + (f"Depends: {depends}\n" if depends else "")
    (tree / "DEBIAN" / "control").write_text(control)
    for path, data in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(data)
    deb = tmp_path / f"{name}_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None or shutil.which("depmod") is None,
                                reason="dpkg-deb and depmod are needed to build and unpack packages")


@needs_dpkg
def test_unpack_split_packages_into_the_cache_layout(tmp_path: Path) -> None:
    """sid's layout (image, config and modules under usr/lib/modules, in separate packages) ends
    in the one layout virtme-ng and vm.py read; kernel.json is written last."""
    release, version = "9.9.1+deb99-amd64", "9.9.1-1"
    vmlinuz = _fake_image(tmp_path, ["checksum_enabled"]).read_bytes()
    modules = f"usr/lib/modules/{release}"
    image = _build_deb(tmp_path, f"linux-image-{release}", version, {},
                       depends=f"linux-base-{release} (= {version}), linux-binary-{release} (= {version}), "
                               f"linux-modules-{release} (= {version}), dracut | initramfs-tools, "
                               f"linux-base-{release}-old (= 0.1)")
    assert kernels.package_pieces(image, version) == [
        f"linux-base-{release}", f"linux-binary-{release}", f"linux-modules-{release}"]
    debs = [image,
            _build_deb(tmp_path, f"linux-binary-{release}", version, {f"{modules}/vmlinuz": vmlinuz}),
            _build_deb(tmp_path, f"linux-base-{release}", version,
                       {f"{modules}/config": b"CONFIG_MPTCP=y\nCONFIG_NET_SCH_NETEM=m\n"}),
            _build_deb(tmp_path, f"linux-modules-{release}", version,
                       {f"{modules}/kernel/net/sched/sch_netem.ko": b"not really a module"})]
    cache = tmp_path / "cache"
    cache.mkdir()
    candidate = kernels.Candidate(f"linux-image-{release}", release, version, "sid")
    kernel = kernels.unpack(debs, candidate, cache)
    root = cache / release
    assert kernel.root == root and kernel.vmlinuz == root / "boot" / f"vmlinuz-{release}"
    assert kernel.vmlinuz.read_bytes() == vmlinuz
    assert (root / "boot" / f"config-{release}").is_file()
    assert (kernel.modules_dir / "modules.dep").is_file()  # depmod ran on the private tree
    assert kernel.config["CONFIG_MPTCP"] == "y" and kernel.sysctls == ["checksum_enabled"]
    assert [p.name for p in cache.iterdir()] == [release]  # no scratch directory left
    stored = json.loads((root / kernels.METADATA).read_text())
    assert (stored["version"], stored["suite"], len(stored["packages"])) == (version, "sid", 4)

    assert kernels.read_cached(root) == kernel
    assert [k.release for k in kernels.fetched_kernels(cache)] == [release]
    assert kernels.find_fetched("9.9", cache) == kernel
    image_for_vm = vm.fetched_kernel("newest", cache)
    assert (image_for_vm.path, image_for_vm.modules_dir) == (kernel.vmlinuz, kernel.modules_dir)


@needs_dpkg
def test_a_package_without_a_kernel_leaves_nothing_behind(tmp_path: Path) -> None:
    deb = _build_deb(tmp_path, "linux-image-1.0-amd64", "1.0-1", {"usr/share/doc/x": b"x"})
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(EnvironmentProblem, match=r"hold no boot/vmlinuz-1\.0-amd64"):
        kernels.unpack([deb], kernels.Candidate("linux-image-1.0-amd64", "1.0-amd64", "1.0-1", "x"), cache)
    assert list(cache.iterdir()) == []


def test_incomplete_kernels_are_not_listed_and_selection_errors_say_how_to_fetch(tmp_path: Path) -> None:
    (tmp_path / "6.1.0-50-amd64" / "boot").mkdir(parents=True)  # a fetch that died: no kernel.json
    assert kernels.fetched_kernels(tmp_path) == []
    with pytest.raises(SpecError) as caught:
        kernels.find_fetched("6.1", tmp_path)
    assert "fetched: none" in caught.value.message
    assert "testbed kernels fetch 6.1" in caught.value.message


def test_vm_kernel_option_tells_selectors_from_paths(tmp_path: Path) -> None:
    assert vm.is_kernel_selector("6.12") and vm.is_kernel_selector("newest")
    assert vm.is_kernel_selector("6.12.117+deb13-amd64")
    assert not vm.is_kernel_selector("/boot/vmlinuz-6.1.0-57-amd64")
    assert not vm.is_kernel_selector("./vmlinuz")
    assert not vm.is_kernel_selector("vmlinuz-6.1")


def test_cli_reports_bad_selectors_in_one_line(tmp_path: Path) -> None:
    from testbed.cli import main

    assert main(["kernels", "list", "--cache", str(tmp_path)]) == 0
    assert main(["kernels", "fetch", "--cache", str(tmp_path), "six"]) == 2


def test_guest_gets_a_fetched_kernels_modules_and_a_short_command_line(tmp_path: Path) -> None:
    tools = vm.Tools(tmp_path / "vng", tmp_path / "qemu", tmp_path / "busybox")
    tree = tmp_path / "cache" / "6.12.117+deb13-amd64" / "lib" / "modules" / "6.12.117+deb13-amd64"
    fetched = vm.KernelImage(tmp_path / "vmlinuz", "6.12.117+deb13-amd64", tree, fetched=True)
    long_command = ["testbed", "run", "x" * 3000]
    plan = vm.VmPlan(kernel=fetched, tools=tools, accel="tcg", command=long_command, cwd=tmp_path,
                     state_dir=tmp_path / "state", cached_mounts=True)
    script = vm.plan_guest_script(plan)
    assert f"mount --bind {vm.CACHED_ROOT_MOUNT}{tree} {tree}" in script
    # the module link virtme-ng put on /lib/modules is set aside and restored around the /usr bind
    usr_bind = script.index(f"mount --bind {vm.CACHED_ROOT_MOUNT}/usr /usr")
    assert script.index(f"mount --bind /lib/modules {vm.SAVED_MODULES_MOUNT}") < usr_bind
    assert script.index(f"mount --bind {vm.SAVED_MODULES_MOUNT} /lib/modules") > usr_bind
    assert len(vm.build_vng_argv(plan)[-1]) < 200  # the script is a file, not kernel command line
    plan.cached_mounts = False  # the export is still mounted for the module tree alone
    assert f"{vm.CACHED_ROOT_TAG} {vm.CACHED_ROOT_MOUNT}" in vm.plan_guest_script(plan)
    assert any(arg.startswith("--qemu-opts=") for arg in vm.build_vng_argv(plan))
    plan.kernel = vm.KernelImage(tmp_path / "vmlinuz", "6.1.0-57-amd64", Path("/lib/modules/6.1.0-57-amd64"))
    assert "/lib/modules" not in vm.plan_guest_script(plan)


def test_a_fetch_removes_what_a_killed_fetch_left(tmp_path: Path) -> None:
    stale = tmp_path / ".6.1.0-50-amd64.partial-x1y2"
    (stale / "boot").mkdir(parents=True)
    with kernels._exclusive(tmp_path):
        assert not stale.exists()
