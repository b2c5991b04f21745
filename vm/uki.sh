# vm/uki.sh: the "uki" scenario of vm/run-smoke (sourced by it; uses its work, build, top,
# timeout_s, fetch helpers and kernel_config).
#
# A sealed boot as a bootc image builds it: the root directory's karg comes from
# "cfsctl compute-karg", goes into a unified kernel image (systemd-boot-efi's EFI stub with the
# VM's kernel, the dracut initramfs of the dracut scenario and that command line, put together
# with objcopy as ukify does), and OVMF (TCG) starts the UKI itself as the removable-media
# boot loader (EFI/BOOT/BOOTX64.EFI) of an ESP disk image. The same root, pulled from an OCI
# layout, must get the same boot image id, and the VM must come up in that image: the check
# script in the image (uki-check) reports the digest from /proc/cmdline and checks a nonce the
# host put both into the image and onto the UKI's command line.

uki_stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
uki_ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
uki_ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd

# The host tools the scenario needs: missing ones are a setup error (tools/setup-deps.sh).
uki_need_tools() {
  local missing="" t
  for t in objcopy objdump mkfs.fat mmd mcopy; do
    command -v "$t" >/dev/null || missing="$missing $t"
  done
  for t in "$uki_stub" "$uki_ovmf_code" "$uki_ovmf_vars"; do
    [ -r "$t" ] || missing="$missing $t"
  done
  [ -z "$missing" ] || die "missing for the uki scenario:$missing (tools/setup-deps.sh installs them)"
}

# The script the UKI boots into (init=), part of the image: the root must be the composefs
# overlay with the physical root at /sysroot, the image /proc/cmdline names must be in the
# repository, and the image must hold the nonce the UKI's command line carries.
uki_write_check() { # file
  cat >"$1" <<'EOF'
#!/bin/busybox sh
bb=/bin/busybox
rel=$($bb uname -r)
digest="" nonce=""
for word in $($bb cat /proc/cmdline); do
  case $word in
    composefs.digest=*) digest=${word#composefs.digest=} ;;
    cfs_smoke.nonce=*) nonce=${word#cfs_smoke.nonce=} ;;
  esac
done
id=${digest##*:}
problem=""
$bb awk '$2 == "/" && $3 == "overlay" { ok = 1 } END { exit !ok }' /proc/mounts ||
  problem="/ is not the composefs overlay: $($bb awk '$2 == "/"' /proc/mounts | $bb tail -n 1)"
[ -n "$problem" ] || [ -n "$id" ] || problem="no composefs.digest= on the command line"
[ -n "$problem" ] || [ -f "/sysroot/composefs/images/$id" ] ||
  problem="the physical root at /sysroot has no image $id"
[ -n "$problem" ] || [ "$($bb cat /usr/share/cfs-smoke/uki-nonce)" = "$nonce" ] ||
  problem="the root's nonce is '$($bb cat /usr/share/cfs-smoke/uki-nonce)', the UKI's '$nonce'"
[ -n "$problem" ] || [ "$($bb cat /var/lib/smoke-marker)" = "kept across boots" ] ||
  problem="/var is not the deployment state's"
if [ -z "$problem" ]; then
  echo "PASS $rel uki-root $digest"
else
  echo "FAIL $rel uki-root $problem"
fi
$bb sync
$bb poweroff -f
EOF
  chmod 0755 "$1"
}

# Builds the UKI: the stub's sections stay, .osrel, .cmdline, .linux and .initrd are added
# after its last section, each aligned (what ukify computes).
uki_build() { # vmlinuz initrd cmdline osrel out.efi
  local align=$((0x100000)) end=0 vma idx size addr
  # objdump -h: index, name, size, VMA, ... (hex)
  while read -r idx _ size addr _; do
    case $idx in '' | *[!0-9]*) continue ;; esac
    [ $((0x$addr + 0x$size)) -le "$end" ] || end=$((0x$addr + 0x$size))
  done < <(objdump -h -w "$uki_stub")
  [ "$end" -gt 0 ] || return 1
  vma=$(((end + align - 1) / align * align))
  local args=() name file
  for name in osrel cmdline linux initrd; do
    case $name in osrel) file=$4 ;; cmdline) file=$3 ;; linux) file=$1 ;; initrd) file=$2 ;; esac
    args+=(--add-section ".$name=$file" --change-section-vma ".$name=$(printf '0x%x' "$vma")")
    vma=$(((vma + $(stat -c %s "$file") + align - 1) / align * align))
  done
  objcopy "${args[@]}" "$uki_stub" "$5"
}

# Prints the scenario's PASS/FAIL/SKIP line.
uki_boot() { # vmlinuz modules-base release out
  local vmlinuz=$1 base=$2 release=$3 out=$4/uki dracut_initrd=$4/dracut/initrd.img
  mkdir -p "$out"
  local config
  config=$(kernel_config "$vmlinuz" "$base" "$release")
  if [ -n "$config" ] && ! grep -q '^CONFIG_EFI_STUB=y' "$config"; then
    echo "SKIP $release uki the kernel has no EFI stub (CONFIG_EFI_STUB), so no UKI can start it"
    return
  fi
  if [ ! -f "$dracut_initrd" ]; then
    echo "FAIL $release uki no dracut initramfs for the UKI (see the dracut scenario)"
    return
  fi
  local start=$SECONDS
  # The root: the test tree with the check script and a nonce of this run.
  local tree=$out/tree nonce
  nonce=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  cp -a "$work/tree-root" "$tree"
  uki_write_check "$tree/usr/lib/cfs-smoke/uki-check"
  echo "$nonce" >"$tree/usr/share/cfs-smoke/uki-nonce"
  local karg
  karg=$("$build/bin/cfsctl" compute-karg --hash sha256 --insecure "$tree")
  local digest=${karg#composefs.digest=?v1-sha256-12:}

  # The same root as an OCI image, pulled into (a copy of) the test disk's repository.
  bash "$top/tests/oci/make-sample-layout.sh" "$out/layout" --from "$tree" --tag uki >/dev/null
  local disk=$out/disk-tree cfsctl pulled
  cp -a "$work/disk-tree" "$disk"
  cfsctl=("$build/bin/cfsctl" --repo "$disk/composefs")
  if ! "${cfsctl[@]}" oci pull -q "oci:$out/layout:uki" uki --bootable >"$out/pull.log" 2>&1; then
    echo "FAIL $release uki oci pull --bootable: $(tail -n 1 "$out/pull.log")"
    return
  fi
  pulled=$("${cfsctl[@]}" oci image-id uki --bootable)
  if [ "$pulled" != "$digest" ]; then
    echo "FAIL $release uki compute-karg of the root gives $digest, the pulled image $pulled"
    return
  fi
  cp -a "$disk/state/deploy/$root_id" "$disk/state/deploy/$digest"
  local size_mb
  size_mb=$(($(du -sm "$disk" | cut -f1) * 2 + 64))
  truncate -s "${size_mb}M" "$out/disk.img"
  mkfs.ext4 -q -b 4096 -O verity -L cfs-smoke -d "$disk" "$out/disk.img"
  rm -rf "$disk" "$tree" "$out/layout"

  # The UKI and an ESP holding it as the removable-media boot loader.
  printf 'ID=cfs-smoke\nPRETTY_NAME="cfs VM smoke test UKI"\n' >"$out/os-release"
  printf '%s' "console=ttyS0 panic=-1 quiet no_timer_check root=/dev/vda rootfstype=ext4 rw \
init=/usr/lib/cfs-smoke/uki-check cfs_smoke.nonce=$nonce $karg" >"$out/cmdline"
  if ! uki_build "$vmlinuz" "$dracut_initrd" "$out/cmdline" "$out/os-release" "$out/uki.efi" \
    >"$out/objcopy.log" 2>&1; then
    echo "FAIL $release uki objcopy could not build the UKI: $(tail -n 1 "$out/objcopy.log")"
    return
  fi
  local esp_mb=$(($(du -m "$out/uki.efi" | cut -f1) + 8))
  rm -f "$out/esp.img"
  mkfs.fat -C "$out/esp.img" $((esp_mb * 1024)) >/dev/null
  mmd -i "$out/esp.img" ::/EFI ::/EFI/BOOT
  mcopy -i "$out/esp.img" "$out/uki.efi" ::/EFI/BOOT/BOOTX64.EFI
  cp "$uki_ovmf_vars" "$out/vars.fd"
  local built=$((SECONDS - start))

  # The root disk first (/dev/vda), the ESP the only boot device.
  local rc=0 boot_start=$SECONDS
  timeout -k 10 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 1 \
    -machine q35 -nodefaults -display none -no-reboot -serial "file:$out/serial.log" \
    -drive "if=pflash,format=raw,unit=0,readonly=on,file=$uki_ovmf_code" \
    -drive "if=pflash,format=raw,unit=1,file=$out/vars.fd" \
    -drive "if=none,id=root,file=$out/disk.img,format=raw" -device virtio-blk-pci,drive=root \
    -drive "if=none,id=esp,file=$out/esp.img,format=raw" \
    -device virtio-blk-pci,drive=esp,bootindex=0 \
    </dev/null >"$out/qemu.log" 2>&1 || rc=$?
  local booted=$((SECONDS - boot_start))
  tr -d '\r' <"$out/serial.log" >"$out/console.log"
  rm -f "$out/disk.img" "$out/esp.img"
  log "$release: uki: UKI and ESP built in ${built}s, OVMF boot to poweroff ${booted}s" >&2
  local line
  # Fixed strings: a release such as 6.12.118+deb12-amd64 is no regular expression.
  line=$(grep -m 1 -F -e "PASS $release uki-root " -e "FAIL $release uki-root " \
    "$out/console.log" || true)
  case $line in
    "PASS $release uki-root ?v1-sha256-12:$digest")
      echo "PASS $release uki" ;;
    "PASS "*) echo "FAIL $release uki booted ${line#PASS "$release" uki-root }, not $digest" ;;
    "FAIL "*) echo "FAIL $release uki ${line#FAIL "$release" uki-root }" ;;
    *)
      local why
      why=$(grep -m 1 -iE 'panic|cfs-mount|failed|error' "$out/console.log" || true)
      [ "$rc" = 124 ] && why="timed out after ${timeout_s}s; $why"
      echo "FAIL $release uki ${why:-no result} (log: $out/console.log)"
      ;;
  esac
}
