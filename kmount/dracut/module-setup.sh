#!/bin/bash
# dracut module: mounts the composefs image named by composefs.digest= / composefs= as the new
# root on /sysroot (cfs-mount setup-root) once sysroot.mount is done. Installed as
# modules.d/37cfs-composefs; include it with `dracut --add cfs-composefs` or add_dracutmodules.

check() {
    require_binaries cfs-mount || return 1
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
    inst_binary cfs-mount
    if [[ -f /usr/lib/composefs/setup-root-conf.toml ]]; then
        inst_simple /usr/lib/composefs/setup-root-conf.toml
    fi
    inst_simple "$moddir/cfs-setup-root.service" "$systemdsystemunitdir/cfs-setup-root.service"
    $SYSTEMCTL -q --root "$initdir" enable cfs-setup-root.service
}
