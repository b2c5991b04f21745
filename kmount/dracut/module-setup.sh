#!/bin/bash
# dracut module: mounts the composefs image named by composefs.digest= / composefs= as the new
# root on /sysroot (cfs-mount setup-root) once sysroot.mount is done. Installed as
# modules.d/37cfs-composefs; include it with `dracut --add cfs-composefs` or add_dracutmodules.

# dracut runs modules with PATH=/sbin:/bin:/usr/sbin:/usr/bin only: also look where local
# installs put cfs-mount. CFS_MOUNT in the environment names another binary (a build tree, a
# test). Whichever is found goes to /usr/sbin/cfs-mount in the initramfs, where the unit runs it.
cfs_mount_binary() {
    local candidate
    for candidate in "${CFS_MOUNT:-}" "$(find_binary cfs-mount)" /usr/local/sbin/cfs-mount; do
        if [[ -n $candidate && -x $candidate ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

check() {
    if ! cfs_mount_binary >/dev/null; then
        derror "cfs-composefs: cfs-mount not found (looked in PATH, /usr/local/sbin; set CFS_MOUNT)"
        return 1
    fi
    # Only when asked for: a host without composefs boot entries does not need it.
    return 255
}

depends() {
    echo systemd
    return 0
}

installkernel() {
    # EROFS and overlayfs always; loop for kernels without file-backed EROFS (before 6.12).
    instmods erofs overlay loop
}

install() {
    # cfs-mount is a static executable: no libraries to pull in.
    inst "$(cfs_mount_binary)" /usr/sbin/cfs-mount
    if [[ -f /usr/lib/composefs/setup-root-conf.toml ]]; then
        inst_simple /usr/lib/composefs/setup-root-conf.toml
    fi
    inst_simple "$moddir/cfs-setup-root.service" "$systemdsystemunitdir/cfs-setup-root.service"
    $SYSTEMCTL -q --root "$initdir" enable cfs-setup-root.service
}
