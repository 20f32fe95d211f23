#!/usr/bin/env bash
# Builds the lab's Vagrant box locally from Debian packages: Debian 12 (bookworm) with its stock
# kernel, the project's apt packages preinstalled, a `vagrant` user with passwordless sudo and
# Vagrant's well-known insecure key (Vagrant swaps it for a fresh key on first `vagrant up`), in
# the libvirt box format (qcow2 + metadata.json). No box catalogue is contacted: packages come
# from the host apt's Debian archive, or $TESTBED_DEBIAN_MIRROR.
#
#   scripts/lab/build_box.sh [--boot-only] [OUT.box]   (as root; `make lab-box` runs it, adds the box)
#
# --boot-only leaves out the project's packages: the same box, booting and reached the same way,
# with only what a VM Vagrant drives needs (and iproute2 and ping, to try netem). The suite's lab
# check boots it (testbed lab check): 95 s to build here, the full box 3 minutes or more.
#
# Idempotent: an existing OUT.box newer than this script and scripts/setup.sh is kept.
set -euo pipefail
# The build's mounts live in a mount namespace of their own. Every process that clones the host's
# namespace meanwhile (each `ip netns exec` of a run beside the build) would otherwise keep a copy
# of the box's root mounted: umount here then does not flush it, and the image lacks the last
# writes (a box built beside a balancer run had no vagrant key and a journal needing recovery).
if [ -z "${TESTBED_BOX_UNSHARED:-}" ] && [ "$(id -u)" -eq 0 ]; then
  exec env TESTBED_BOX_UNSHARED=1 unshare --mount --propagation private "$(realpath "$0")" "$@"
fi
cd "$(dirname "$0")/../.."

BOOT_ONLY=0
if [ "${1:-}" = "--boot-only" ]; then BOOT_ONLY=1; shift; fi
BOX_CACHE="${TESTBED_BOX_CACHE:-/var/cache/mptcp-testbed/boxes}"
if [ "$BOOT_ONLY" = 1 ]; then
  OUT="${1:-$BOX_CACHE/mptcp-testbed-bookworm64-boot.box}"
else
  OUT="${1:-$BOX_CACHE/mptcp-testbed-bookworm64.box}"
fi
SIZE_GB=8
SUITE=bookworm

die() { echo "lab box: $*" >&2; exit 2; }
trap 'echo "lab box: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, loop devices); try: sudo make lab-box"
for tool in debootstrap qemu-img sfdisk losetup mkfs.ext4 extlinux; do
  command -v "$tool" >/dev/null || die "missing $tool; run: make lab-setup"
done
MBR=/usr/lib/syslinux/mbr/mbr.bin
[ -r "$MBR" ] || die "missing $MBR (syslinux-common); run: make lab-setup"
KEY=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -1 || true)
[ -n "$KEY" ] || KEY=$(ls /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -1 || true)
[ -n "$KEY" ] || die "Vagrant's insecure public key (keys/vagrant.pub of the vagrant gem) not found; install vagrant"

if [ -f "$OUT" ] && [ "$OUT" -nt "$0" ] && [ "$OUT" -nt scripts/setup.sh ]; then
  echo "lab box: $OUT is up to date"
  exit 0
fi

MIRROR="${TESTBED_DEBIAN_MIRROR:-$(PYTHONPATH=. python3 -c 'from testbed.kernels import host_mirror; print(host_mirror())' 2>/dev/null || true)}"
[ -n "$MIRROR" ] || die "no Debian archive found in the host's apt sources; set TESTBED_DEBIAN_MIRROR"

# the guest's packages: the project's own list (scripts/setup.sh), all of it, so that provisioning
# (the same scripts/setup.sh) finds them installed and only builds the .venv in the slow guest
if [ "$BOOT_ONLY" = 0 ]; then
  mapfile -t PACKAGES < <(bash -c 'source <(sed -n "/^APT_PACKAGES=(/,/^)/p" scripts/setup.sh); printf "%s\n" "${APT_PACKAGES[@]}"')
  PACKAGES+=(locales-all)
  COMPRESS=(-c)
else
  # to try netem (delay measured by ping); no locales and an uncompressed image: a minute less
  PACKAGES=(iproute2 iputils-ping)
  COMPRESS=()
fi
# and what a bootable VM Vagrant can drive needs besides (minbase has no init, udev or dbus)
PACKAGES+=(systemd-sysv udev dbus kmod netbase linux-image-amd64 openssh-server sudo rsync make
          ifupdown isc-dhcp-client extlinux ca-certificates)

WORK=$(mktemp -d /var/tmp/tb-labbox.XXXXXX)
LOOP=""
cleanup() {
  set +e
  for m in dev/pts dev proc sys; do mountpoint -q "$WORK/root/$m" && umount -l "$WORK/root/$m"; done
  mountpoint -q "$WORK/root" && umount -l "$WORK/root"
  [ -n "$LOOP" ] && losetup -d "$LOOP"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM

started=$(date +%s)
echo "lab box: building $OUT from $SUITE (${#PACKAGES[@]} packages), work dir $WORK"
truncate -s "${SIZE_GB}G" "$WORK/disk.raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$WORK/disk.raw"
LOOP=$(losetup -f --show -o $((2048 * 512)) "$WORK/disk.raw")
mkfs.ext4 -q -L root -O ^metadata_csum,^64bit "$LOOP"   # extlinux reads neither
mkdir "$WORK/root"
mount "$LOOP" "$WORK/root"

# the installed root file system is cached (keyed by suite, mirror and package list): rebuilding
# the box after a change to its configuration below takes a minute instead of a full install
# (the cache keeps extended attributes: file capabilities such as ping's cap_net_raw live there;
# "xattrs" in the key retires caches made without them, where ping failed for the vagrant user)
ROOTFS_KEY=$(printf '%s\n' xattrs "$SUITE" "$MIRROR" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
ROOTFS_CACHE="$(dirname "$OUT")/rootfs-$SUITE-$ROOTFS_KEY.tar"
if [ -f "$ROOTFS_CACHE" ]; then
  echo "lab box: installed root file system from $ROOTFS_CACHE"
  tar -C "$WORK/root" --xattrs --xattrs-include='*' -xpf "$ROOTFS_CACHE"
  for m in proc sys dev dev/pts; do mount --bind "/$m" "$WORK/root/$m"; done
else
  debootstrap --variant=minbase "$SUITE" "$WORK/root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  for m in proc sys dev dev/pts; do mount --bind "/$m" "$WORK/root/$m"; done
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" \
    > "$WORK/root/etc/apt/sources.list"
  printf '#!/bin/sh\nexit 101\n' > "$WORK/root/usr/sbin/policy-rc.d"; chmod 755 "$WORK/root/usr/sbin/policy-rc.d"
  chroot "$WORK/root" sh -c 'echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections'
  chroot "$WORK/root" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  chroot "$WORK/root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${PACKAGES[@]}" >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; die "apt-get install in the box failed (log above)"; }
  rm -f "$WORK/root/usr/sbin/policy-rc.d"
  chroot "$WORK/root" apt-get clean
  mkdir -p "$(dirname "$ROOTFS_CACHE")"
  if tar -C "$WORK/root" --one-file-system --xattrs --xattrs-include='*' -cpf "$ROOTFS_CACHE.tmp" .; then
    mv "$ROOTFS_CACHE.tmp" "$ROOTFS_CACHE"
  else
    rm -f "$ROOTFS_CACHE.tmp"; echo "lab box: the root file system was not cached (tar failed; above)" >&2
  fi
fi

# boot: extlinux on the root filesystem, syslinux's MBR; serial console for `virsh console`
echo "LABEL=root / ext4 errors=remount-ro 0 1" > "$WORK/root/etc/fstab"
mkdir -p "$WORK/root/boot/extlinux"
cat > "$WORK/root/boot/extlinux/extlinux.conf" <<CONF
DEFAULT debian
TIMEOUT 1
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=LABEL=root ro console=ttyS0 net.ifnames=0 biosdevname=0
CONF
extlinux --install "$WORK/root/boot/extlinux" >/dev/null 2>&1 || die "extlinux --install failed"
# the kernel/initrd symlinks are relative to / in the guest, extlinux needs them in /boot's fs: copy
cp -L "$WORK/root/vmlinuz" "$WORK/root/boot/extlinux/" 2>/dev/null || true

# certificate authorities the host's administrator added (e.g. a TLS-intercepting proxy's): the
# guest reaches the package registries through the same network, so it must trust them too
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$WORK/root/usr/local/share/ca-certificates/"
  chroot "$WORK/root" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates in the box failed"
fi

# network (DHCP on eth0), ssh, the vagrant user
echo mptcp-testbed > "$WORK/root/etc/hostname"
printf 'auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n' > "$WORK/root/etc/network/interfaces"
chroot "$WORK/root" useradd -m -s /bin/bash -G sudo vagrant
echo 'vagrant:vagrant' | chroot "$WORK/root" chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$WORK/root/etc/sudoers.d/vagrant"; chmod 440 "$WORK/root/etc/sudoers.d/vagrant"
install -d -m 700 -o 1000 -g 1000 "$WORK/root/home/vagrant/.ssh"
install -m 600 -o 1000 -g 1000 "$KEY" "$WORK/root/home/vagrant/.ssh/authorized_keys"
echo 'UseDNS no' > "$WORK/root/etc/ssh/sshd_config.d/vagrant.conf"
rm -f "$WORK/root"/etc/ssh/ssh_host_*   # regenerated on first boot (one key per VM, not per box)
cat > "$WORK/root/etc/systemd/system/ssh-host-keys.service" <<UNIT
[Unit]
Description=Generate this VM's ssh host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
UNIT
chroot "$WORK/root" systemctl enable ssh-host-keys.service ssh.service >/dev/null 2>&1
: > "$WORK/root/etc/machine-id"

for m in dev/pts dev proc sys; do umount "$WORK/root/$m"; done
# the blocks of deleted files (apt's downloads) become holes again, so the image holds only files
fstrim "$WORK/root" || true
umount "$WORK/root"
# a file system still mounted somewhere else has not been written back: refuse to ship it
if dumpe2fs -h "$LOOP" 2>/dev/null | grep -q "^Filesystem features:.*needs_recovery"; then
  die "the box's file system is still mounted in another mount namespace; nothing was written"
fi
losetup -d "$LOOP"; LOOP=""
dd if="$MBR" of="$WORK/disk.raw" bs=440 count=1 conv=notrunc status=none

mkdir "$WORK/box"
qemu-img convert "${COMPRESS[@]}" -O qcow2 "$WORK/disk.raw" "$WORK/box/box.img"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$SIZE_GB" > "$WORK/box/metadata.json"
cat > "$WORK/box/Vagrantfile" <<'VF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
end
VF
mkdir -p "$(dirname "$OUT")"
tar -C "$WORK/box" -cf "$OUT.tmp" metadata.json Vagrantfile box.img
mv "$OUT.tmp" "$OUT"
echo "lab box: $OUT ($(du -h "$OUT" | cut -f1)) built in $(( $(date +%s) - started )) s"
