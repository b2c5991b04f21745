#!/bin/busybox sh
# /init of the tests/kmount/vm initramfs: exercises cfs-mount on the booted kernel.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo
echo "KERNEL $(uname -r)"
for m in $(cat /modules/order); do insmod /modules/$m 2>/dev/null; done

# check NAME EXPECTED-SUBSTRING COMMAND...: PASS when the output contains the substring.
check() {
  name=$1 want=$2
  shift 2
  got=$("$@" 2>&1)
  rc=$?
  case "$got" in
    *"$want"*) echo "PASS $name: $(echo "$got" | head -1)" ;;
    *) echo "FAIL $name (rc $rc): $(echo "$got" | tr '\n' '|')" ;;
  esac
}
M=/data/mnt
mkdir -p $M /data/upper /data/work
B="cfs-mount -v --basedir /data/objects /data/img.cfs $M"

# Run-time probing must find a working path on every kernel.
check "auto" "tier=" $B
check "auto content" "2999" sh -c "tail -2 $M/big | head -1"
check "auto inline" "inline" cat $M/small
check "auto root" "big dir etc small sysroot var" sh -c "echo \$(ls $M)"
umount $M
check "auto loop" "erofs=/dev/loop" env CFS_MOUNT_FORCE_LOOP=1 $B
check "auto loop content" "2999" sh -c "tail -2 $M/big | head -1"
umount $M

# Forced tiers either work with correct content or are refused cleanly on this kernel.
for tier in fd string legacy-dataonly legacy-lower; do
  out=$(env CFS_MOUNT_FORCE_TIER=$tier $B 2>&1)
  if [ $? = 0 ]; then
    check "tier $tier content" "2999" sh -c "tail -2 $M/big | head -1"
    check "tier $tier root" "big dir etc small sysroot var" sh -c "echo \$(ls $M)"
    umount $M
  else
    check "tier $tier refused cleanly" "no overlayfs mount method works" echo "$out"
  fi
done

check "rw" "tier=" $B --rw --upperdir /data/upper --workdir /data/work
echo hi >$M/newfile
umount $M
check "rw persisted" "hi" cat /data/upper/newfile
if $B --verity require >/data/out 2>&1; then
  check "verity require accepted" "verity=require" cat /data/out
  umount $M
else
  check "verity require refused (kernel < 6.6)" "verity= needs Linux 6.6+" cat /data/out
fi
check "verity try" "tier=" $B --verity try
umount $M
check "wrong digest" "digest mismatch" $B --digest 0000000000000000000000000000000000000000000000000000000000000000
check "missing image" "no such image file" cfs-mount --basedir /data/objects /data/none.cfs $M
echo "LEFT: mounts=$(grep -c -E 'overlay|erofs' /proc/self/mountinfo) loops=$(cat /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l) tmp=$(ls -a /run /tmp 2>/dev/null | grep -c '^\.cfs')"

D=$(cat /data/digest)
echo "composefs.digest=?v1-sha256-12:$D" >/data/cmdline
check "setup-root" "new root ready" cfs-mount setup-root --cmdline /data/cmdline --sysroot /data/sysroot --config /none
check "setup-root etc" "conf" cat /data/sysroot/etc/app.conf
echo x >/data/sysroot/etc/written
check "setup-root etc upper" "written" ls /data/sysroot/sysroot/state/deploy/$D/etc/upper
check "setup-root var" "v" sh -c "touch /data/sysroot/var/v && ls /data/sysroot/sysroot/state/deploy/$D/var/"
echo DONE
poweroff -f
