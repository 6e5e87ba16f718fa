#!/bin/sh
# Builds the test guest: Debian's kernel and a busybox initramfs holding the
# virtio, virtio_console and ext4 modules, Debian's qemu-ga with every
# library it links, and tests/guest/init (the workload).  Output, in OUT
# (default $BUILD/guest, else build/guest): vmlinuz and initramfs.cpio.gz.
# Needs linux-image-amd64, busybox-static and qemu-guest-agent (make deps).
# Reads the installed files only, so it needs no root.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${BUILD:-build}/guest}

kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "build-initramfs: no /boot/vmlinuz-* (install linux-image-amd64)" >&2; exit 1; }
kver=${kernel#/boot/vmlinuz-}
moddir=/lib/modules/$kver
for f in /bin/busybox /usr/sbin/qemu-ga "$moddir/modules.dep"; do
    [ -e "$f" ] || { echo "build-initramfs: $f missing (make deps)" >&2; exit 1; }
done
file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' ||
    ldd /bin/busybox 2>&1 | grep -q 'not a dynamic' ||
    { echo "build-initramfs: /bin/busybox is not static (install busybox-static)" >&2; exit 1; }

mkdir -p "$out"
root=$(mktemp -d "$out/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/sbin" "$root/proc" "$root/sys" "$root/dev" \
         "$root/mnt" "$root/run" "$root/tmp" "$root/var/run" "$root/etc" \
         "$root/lib/modules"
cp /bin/busybox "$root/bin/busybox"
cp "$here/init" "$root/init"
chmod 0755 "$root/init"

# Modules in load order: each one's modules.dep dependencies first (they
# are listed deepest last), then itself.  crc32c_generic is not in
# modules.dep, yet ext4 asks for the crc32c algorithm at mount.
order=""
add_mod() {
    # $1: path relative to $moddir
    case " $order " in *" $1 "*) return;; esac
    deps=$(grep "^$1:" "$moddir/modules.dep" | cut -d: -f2)
    for d in $(echo $deps | tr ' ' '\n' | tac); do
        add_mod "$d"
    done
    order="$order $1"
}
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev \
         virtio_pci virtio_blk virtio_console crc32c_generic ext4; do
    p=$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | cut -d: -f1)
    if [ -z "$p" ]; then
        # Built into this kernel: nothing to load.
        grep -qE "(^|/)$m\.ko" "$moddir/modules.builtin" && continue
        echo "build-initramfs: module $m not found for $kver" >&2
        exit 1
    fi
    add_mod "$p"
done
: >"$root/etc/modules"
for p in $order; do
    name=$(basename "$p")
    case "$name" in
    *.ko) cp "$moddir/$p" "$root/lib/modules/$name" ;;
    *.ko.xz) xz -dc "$moddir/$p" >"$root/lib/modules/${name%.xz}"; name=${name%.xz} ;;
    *.ko.zst) zstd -qdc "$moddir/$p" >"$root/lib/modules/${name%.zst}"; name=${name%.zst} ;;
    esac
    echo "${name%.ko*}" >>"$root/etc/modules"
done

# qemu-ga and what ldd says it loads, at the same paths.
copy_with_libs() {
    mkdir -p "$root$(dirname "$1")"
    cp -L "$1" "$root$1"
    for lib in $(ldd "$1" | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) .*/\1/p'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}
copy_with_libs /usr/sbin/qemu-ga
mkdir -p "$root/lib64"
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"

tmp="$out/initramfs.cpio.gz.tmp"
(cd "$root" && find . | LC_ALL=C sort | /bin/busybox cpio -o -H newc 2>/dev/null) |
    gzip -1 >"$tmp"
cp "$kernel" "$out/vmlinuz.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$tmp" "$out/initramfs.cpio.gz"
echo "build-initramfs: $out/initramfs.cpio.gz (kernel $kver, modules:$(tr '\n' ' ' <"$root/etc/modules"| sed 's/ $//; s/^/ /'))"
