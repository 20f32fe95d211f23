#!/usr/bin/env bash
# Installs everything the testbed needs on Debian 12 / Ubuntu 22.04+, as root, idempotently:
# the apt packages (only when one is missing) and a .venv with the Python dependencies
# (only when pyproject.toml changed since the last install).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  mininet iproute2 nftables iptables ethtool iperf3 tshark tcpdump procps iputils-ping
  python3 python3-venv python3-dev gcc
  # `testbed vm run` (docs/lab.md): qemu, a stock Debian kernel with sch_netem (installed for its
  # /boot/vmlinuz-* and /lib/modules only), busybox for virtme-ng's initramfs; vagrant validates
  # the lab's Vagrantfile
  qemu-system-x86 linux-image-amd64 busybox-static vagrant
  # `testbed remote run` (docs/lab.md): ssh for the lab; sshd only as a program for the tests'
  # servers in namespaces (installed without starting or enabling the ssh service, see below)
  openssh-client openssh-server
  # stack = "command" worked examples (docs/command-endpoints.md): a stock tool made MPTCP by
  # mptcpize's LD_PRELOAD
  ncat socat mptcpize
)

if [ "$(id -u)" -ne 0 ]; then
  # a Vagrant or lab user with sudo: re-run as root (namespaces, tc, nftables and apt need it)
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E "$0" "$@"
  fi
  echo "setup: must run as root (network namespaces, tc and nftables need it); try: sudo make" >&2
  exit 2
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q
  # installing openssh-server must not leave an ssh service running (or starting at boot) on a
  # machine that had none: a temporary policy-rc.d (101 = action forbidden) stops the package
  # scripts from starting it, and if this script installed it, the service is disabled again
  new_sshd=""
  if printf '%s\n' "${missing[@]}" | grep -qx openssh-server; then new_sshd=1; fi
  own_policy=""
  if [ -n "$new_sshd" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  if [ -n "$new_sshd" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
  fi
fi

PYTHON="${PYTHON:-/usr/bin/python3}"
stamp=.venv/.installed-from
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,native]'
  echo "$want" > "$stamp"
fi
# The C checksum (testbed/wire/_checksum.c), built in this tree for the venv's python with gcc
# alone (no pip: a remote host's tree reuses a venv and may have no package index), again when
# the source is newer. Without it the checksums run in Python: slower, and `testbed doctor` says so.
ext_suffix="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
checksum_so="testbed/wire/_checksum${ext_suffix}"
if [ ! -e "$checksum_so" ] || [ testbed/wire/_checksum.c -nt "$checksum_so" ]; then
  include="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  if gcc -O2 -Wall -shared -fPIC -I"$include" testbed/wire/_checksum.c -o "$checksum_so.tmp" \
      && mv "$checksum_so.tmp" "$checksum_so"; then
    echo "setup: built $checksum_so"
  else
    rm -f "$checksum_so.tmp"
    echo "setup: could not build testbed/wire/_checksum.c (needs gcc and python3-dev):" \
      "checksums run in Python, slower" >&2
  fi
fi
# The stack core compiled by mypyc (testbed/mptcp/native.py; docs/benchmarks.md, "The stack core
# compiled"): about twice as fast as its source. Rebuilt whenever a source changed; a stale or
# partial build is never used. `TESTBED_NATIVE=0 make setup` leaves it out (the source runs).
# If the build fails, native_build says why and the core runs from source (`testbed doctor`).
if [ "${TESTBED_NATIVE:-1}" != 0 ]; then
  .venv/bin/python -m testbed.mptcp.native_build || true
fi
echo "setup: ready ($(.venv/bin/python --version), $(.venv/bin/testbed --version 2>/dev/null || echo 'testbed cli'))"
