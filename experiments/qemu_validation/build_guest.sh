#!/bin/bash
# Build the lab guest: a busybox-static + dirtier initramfs, and locate the
# installed Debian kernel. Installs nothing; checks and says what is missing.
#
# Output (default ./build, override with OUT=dir):
#   $OUT/initramfs.cpio.gz   the initramfs
#   $OUT/vmlinuz             symlink to the Debian kernel under /boot
#   $OUT/dirtier             the static dirtier binary
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$HERE/build}"

missing=()
command -v gcc >/dev/null || missing+=("gcc (apt: gcc libc6-dev)")
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=("static libc (apt: libc6-dev)")
BUSYBOX=""
for b in /bin/busybox /usr/bin/busybox; do
    if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then BUSYBOX="$b"; break; fi
done
[ -n "$BUSYBOX" ] || missing+=("static busybox (apt: busybox-static)")
command -v cpio >/dev/null || missing+=("cpio (apt: cpio)")
command -v gzip >/dev/null || missing+=("gzip (apt: gzip)")
KERNEL="$(ls -1 /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n1 || true)"
[ -n "$KERNEL" ] || missing+=("Debian kernel in /boot (apt: linux-image-amd64)")
if [ -n "$KERNEL" ] && [ ! -r "$KERNEL" ]; then missing+=("readable $KERNEL"); fi
command -v qemu-system-x86_64 >/dev/null || missing+=("qemu-system-x86_64 (apt: -t bookworm-backports qemu-system-x86 qemu-utils)")

if [ ${#missing[@]} -gt 0 ]; then
    echo "build_guest.sh: missing:" >&2
    for m in "${missing[@]}"; do echo "  - $m" >&2; done
    exit 1
fi

mkdir -p "$OUT"
echo "compiling dirtier (static)"
nice gcc -O2 -static -Wall -o "$OUT/dirtier" "$HERE/guest/dirtier.c"

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,tmp}
cp "$BUSYBOX" "$ROOT/bin/busybox"
for a in sh mount cat echo sleep poweroff halt uname; do ln -s busybox "$ROOT/bin/$a"; done
cp "$OUT/dirtier" "$ROOT/bin/dirtier"
cat > "$ROOT/init" <<'EOF'
#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "INIT cmdline: $(cat /proc/cmdline)"
echo "INIT memtotal: $(/bin/busybox grep MemTotal /proc/meminfo)"
/bin/dirtier
echo "INIT dirtier exited rc=$?"
exec /bin/busybox sh
EOF
chmod +x "$ROOT/init"
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -9) > "$OUT/initramfs.cpio.gz"
ln -sf "$KERNEL" "$OUT/vmlinuz"
echo "kernel:    $KERNEL"
echo "initramfs: $OUT/initramfs.cpio.gz ($(stat -c %s "$OUT/initramfs.cpio.gz") bytes)"
echo "qemu:      $(qemu-system-x86_64 --version | head -n1)"
