#!/usr/bin/env python3
"""Kernel mount of a format V2 image: cfsctl mkcomposefs --min-version=2 writes it from a
dumpfile with hardlinks, whiteouts, devices, xattrs (shared and escaped), inline data and
symlinks at the V2 limits; the kernel's EROFS mounts it (loop device) and every entry it
shows must match the image's dump (cfsctl dump): type, mode, nlink, owner, mtime, rdev,
size, symlink target, inline content and xattrs; inode numbers are the V2 nids (hardlinks
share one). Needs root (exit 77 otherwise). Usage: v2_kernel_mount.py CFSCTL"""
import os, re, stat, subprocess, sys, tempfile

cfsctl = sys.argv[1]
if os.geteuid() != 0:
    print("SKIP: mounting an EROFS image needs root"); sys.exit(77)
if "erofs" not in open("/proc/filesystems").read():
    subprocess.run(["modprobe", "erofs"], stderr=subprocess.DEVNULL)
    if "erofs" not in open("/proc/filesystems").read():
        print("SKIP: the kernel has no EROFS"); sys.exit(77)

def unescape(s):
    return re.sub(rb"\\(x[0-9a-fA-F]{2}|.)", lambda m: bytes([int(m.group(1)[1:], 16)]) if m.group(1)[:1] == b"x" and len(m.group(1)) == 3 else {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"\\": b"\\"}.get(m.group(1), m.group(1)), s)

lines = [b"/ 0 40755 2 0 0 0 1000.0 - - - security.selinux=root_t user.a=1",
         b"/a 0 40700 2 7 8 0 1001.0 - - - security.selinux=root_t trusted.overlay.opaque=y",
         b"/a/x 5 100644 2 1 2 0 1002.0 - hello - user.a=1 user.b=\\x00\\xff",
         b"/a/gone 0 20000 1 0 0 0 3.0 - - - user.overlay.whiteout=",
         b"/ab 0 20000 1 0 0 0 4.0 - - -",
         b"/b 5 @100644 - - - - 0.0 /a/x - -",
         b"/dev 0 20640 1 0 0 259 5.0 - - -",
         b"/fifo 0 10600 1 0 0 0 6.0 - - -",
         b"/i512 512 100644 1 0 0 0 7.0 - " + b"i" * 512 + b" -",
         b"/l1024 1024 120777 1 0 0 0 8.0 " + b"l" * 1024 + b" - -"]
lines += [b"/p%d %d 100644 1 %d 0 0 %d.0 - %s - user.k=%s" % (n, n * 13 % 500 + 1, n, n, b"z" * (n * 13 % 500 + 1), b"v" * (n % 30)) for n in range(1, 60)]
with tempfile.TemporaryDirectory() as tmp:
    dump = os.path.join(tmp, "in.dump")
    open(dump, "wb").write(b"\n".join(sorted(lines, key=lambda l: l.split(b" ")[0])) + b"\n")
    img = os.path.join(tmp, "v2.img")
    subprocess.run([cfsctl, "mkcomposefs", "--from-file", "--min-version=2", dump, img], check=True)
    out = subprocess.run([cfsctl, "dump", img], check=True, capture_output=True).stdout
    mnt = os.path.join(tmp, "mnt"); os.mkdir(mnt)
    subprocess.run(["mount", "-t", "erofs", "-o", "ro,loop", img, mnt], check=True)
    errors, checked, inodes = [], 0, {}
    try:
        for line in out.splitlines():
            f = line.split(b" ")
            path, size, mode, nlink, uid, gid, rdev, mtime, payload, content = (unescape(x) for x in f[:10])
            full = os.path.join(mnt, path.decode("latin-1").lstrip("/"))
            st = os.lstat(full)
            hard = mode.startswith(b"@")
            want = int(mode.lstrip(b"@"), 8) if not hard else None
            if hard:
                target = os.lstat(os.path.join(mnt, payload.decode("latin-1").lstrip("/")))
                if st.st_ino != target.st_ino: errors.append(f"{path}: not the inode of {payload}")
                checked += 1
                continue
            got = (st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime))
            exp = (want, int(uid), int(gid), int(mtime.split(b".")[0]))
            if got != exp: errors.append(f"{path}: {got} != {exp}")
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink != int(nlink): errors.append(f"{path}: nlink {st.st_nlink}")
            if stat.S_ISCHR(st.st_mode) and st.st_rdev != int(rdev): errors.append(f"{path}: rdev {st.st_rdev}")
            if stat.S_ISLNK(st.st_mode) and os.readlink(full.encode("latin-1")) != payload: errors.append(f"{path}: target")
            if stat.S_ISREG(st.st_mode):
                data = open(full, "rb").read()
                if data != (b"" if content == b"-" else content) or st.st_size != int(size): errors.append(f"{path}: content")
            xattrs = {}
            for kv in f[11:]:
                k, _, v = kv.partition(b"=")
                xattrs[unescape(k)] = unescape(v)
            if not stat.S_ISLNK(st.st_mode):
                # The VFS hides user.* on special files.
                plain = stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)
                if not plain: xattrs = {k: v for k, v in xattrs.items() if not k.startswith(b"user.")}
                names = [n for n in os.listxattr(full) if plain or not n.startswith("user.")]
                shown = {n.encode(): os.getxattr(full, n) for n in names}
                # The kernel shows the stored (escaped) trusted.overlay.* names.
                expect = {(b"trusted.overlay.overlay." + k[16:] if k.startswith(b"trusted.overlay.") else k): v for k, v in xattrs.items()}
                if shown != expect: errors.append(f"{path}: xattrs {shown} != {expect}")
            inodes.setdefault(st.st_ino, path)
            checked += 1
    finally:
        subprocess.run(["umount", mnt], check=True)
    for e in errors: print("FAIL", e)
    print(f"v2 kernel mount: {checked} entries compared with the dump, {len(errors)} differ")
    sys.exit(1 if errors or checked < len(lines) else 0)
