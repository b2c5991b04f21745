"""The conformance source tree: every file type and corner case a tar layer can carry.

make_tree(DIR) builds it (as root) and returns notes on what the filesystem refused;
make_layer2(DIR) builds the second layer's tree (xl/a, xl/b one inode: the cross-layer hard
link, see corpus.py). Contents are deterministic.
"""
import hashlib
import os
import subprocess

# The top-level directories, one per kind of entry.
CATEGORIES = ("files", "dirs", "links", "dev", "sparse", "perm", "hl", "long", "owners",
              "times", "xattr", "names", "xl")


def data(seed, n):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"%s-%d" % (seed.encode(), i)).digest()
        i += 1
    return bytes(out[:n])


def write(path, content, mode=0o644):
    with open(path, "wb") as f:
        f.write(content)
    os.chmod(path, mode)


def setx(path, name, value, notes):
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as e:
        notes.append("xattr %s on %s refused: %s" % (name, path, e))


def make_tree(root):
    notes = []
    j = lambda *p: os.path.join(root, *p)  # noqa
    os.makedirs(root)
    for d in CATEGORIES:
        os.mkdir(j(d))

    # Regular files around the block and inline-data boundaries.
    for n in (0, 1, 100, 511, 512, 513, 4095, 4096, 4097, 65537, 1048576 + 3):
        write(j("files", "f%d" % n), data("f%d" % n, n))
    write(j("files", "exec"), b"#!/bin/sh\necho hi\n", 0o755)
    write(j("files", "noperm"), b"none\n", 0o000)

    # Directories: empty, nested, odd modes.
    os.makedirs(j("dirs", "a", "b", "c", "d"))
    os.mkdir(j("dirs", "empty"))
    os.mkdir(j("dirs", "private"), 0o700)
    os.chmod(j("dirs", "private"), 0o700)
    os.mkdir(j("dirs", "wx"), 0o311)
    os.chmod(j("dirs", "wx"), 0o311)

    # Symlinks: relative, absolute, dangling, to a dir, long targets (>100, >255, ~1000).
    os.symlink("../files/f1", j("links", "rel"))
    os.symlink("/etc/passwd", j("links", "abs"))
    os.symlink("does/not/exist", j("links", "dangling"))
    os.symlink("../dirs/a", j("links", "todir"))
    os.symlink("t" * 150, j("links", "long150"))
    os.symlink("/".join(["u" * 60] * 5), j("links", "long304"))
    os.symlink("/".join(["v" * 99] * 10), j("links", "long999"))
    os.symlink("x", j("links", "s" * 200))  # long symlink name

    # Devices (also with major/minor beyond 8 bits and at the kernel's 12/20-bit limits), FIFOs.
    for name, kind, ma, mi in (("null", "c", 1, 3), ("sda", "b", 8, 0),
                               ("big-char", "c", 4095, 1048575), ("big-block", "b", 300, 70000),
                               ("minor256", "c", 10, 256), ("major256", "b", 256, 1)):
        os.mknod(j("dev", name), 0o600 | (0o20000 if kind == "c" else 0o60000),
                 os.makedev(ma, mi))
    os.mkfifo(j("dev", "fifo"), 0o644)
    os.mkfifo(j("dev", "fifo-sticky"))
    os.chmod(j("dev", "fifo-sticky"), 0o1622)

    # Sparse files: data between big holes, a hole at the end, nothing but a hole.
    with open(j("sparse", "holes"), "wb") as f:
        f.write(data("s0", 5000))
        f.seek(8 << 20)
        f.write(data("s1", 4096))
        f.seek((24 << 20) - 100)
        f.write(data("s2", 100))
    with open(j("sparse", "tailhole"), "wb") as f:
        f.write(data("s3", 70000))
        f.truncate(8 << 20)
    with open(j("sparse", "allhole"), "wb") as f:
        f.truncate(8 << 20)
    with open(j("sparse", "small-holes"), "wb") as f:
        for i in range(16):  # many small extents: long sparse maps (GNU extension headers)
            f.seek(i * 65536)
            f.write(data("sm%d" % i, 512))
        f.truncate(16 * 65536)

    # Past 8 GiB (beyond 11 octal digits: base-256 or PAX size): only the sparse writers get
    # it (corpus.py excludes it for the others, which would write 9 GiB of zeros).
    with open(j("sparse", "huge"), "wb") as f:
        f.write(data("h0", 1000))
        f.seek(4 << 30)
        f.write(data("h1", 4096))
        f.seek((9 << 30) + 4096 - 10)
        f.write(data("h2", 10))

    # setuid/setgid/sticky.
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("sticky-file", 0o1644),
                       ("all", 0o7777), ("suid-noexec", 0o4644), ("sgid-only", 0o2000)):
        write(j("perm", name), name.encode(), 0)
        os.chmod(j("perm", name), mode)
    for name, mode in (("tmp", 0o1777), ("sgid-dir", 0o2775), ("all-dir", 0o7777)):
        os.mkdir(j("perm", name))
        os.chmod(j("perm", name), mode)

    # Hard links: a pair, a triple (link of a link), across directories, long names,
    # hard-linked symlink, FIFO and device, a hard-linked empty file, setuid hard links.
    write(j("hl", "a"), data("hl", 3000))
    os.link(j("hl", "a"), j("hl", "b"))
    os.link(j("hl", "b"), j("hl", "c"))
    os.link(j("hl", "a"), j("dirs", "a", "b", "hl-a"))
    write(j("hl", "L" * 150), data("hll", 700))
    os.link(j("hl", "L" * 150), j("hl", "M" * 180))
    os.link(j("hl", "L" * 150), j("hl", "short-to-long"))
    write(j("hl", "empty1"), b"")
    os.link(j("hl", "empty1"), j("hl", "empty2"))
    write(j("hl", "suid1"), b"suid\n", 0o4755)
    os.link(j("hl", "suid1"), j("hl", "suid2"))
    os.symlink("a", j("hl", "sym1"))
    os.link(j("hl", "sym1"), j("hl", "sym2"), follow_symlinks=False)
    os.mkfifo(j("hl", "fifo1"))
    os.link(j("hl", "fifo1"), j("hl", "fifo2"))
    os.mknod(j("hl", "dev1"), 0o20640, os.makedev(1, 5))
    os.link(j("hl", "dev1"), j("hl", "dev2"))

    # Long names: one component of 255 bytes, of 101 bytes, paths past 100, 155+100, 255,
    # 1000 and 3000 bytes.
    write(j("long", "n" * 255), b"255\n")
    write(j("long", "m" * 101), b"101\n")
    deep = j("long")
    for i in range(12):
        deep = os.path.join(deep, ("%02d" % i) * 125)  # 250-byte components
        os.mkdir(deep)
        write(os.path.join(deep, "f"), b"depth %d\n" % i)
    p = j("long", "p" * 150)
    os.mkdir(p)
    write(os.path.join(p, "q" * 99), b"prefix split\n")

    # Owners: small, at the 7-digit octal limit (2097151), above it, above 2^31.
    for name, uid, gid in (("u1000", 1000, 1000), ("octal-max", 2097151, 2097151),
                           ("octal-over", 2097152, 2097153), ("big", 3000000, 3000001),
                           ("huge", 2 ** 31 + 5, 2 ** 32 - 3), ("mixed", 0, 3000000)):
        write(j("owners", name), name.encode())
        os.lchown(j("owners", name), uid, gid)
    os.mkdir(j("owners", "dir-big"))
    os.symlink("big", j("owners", "sym-big"))
    os.lchown(j("owners", "sym-big"), 3000000, 3000000)
    os.mknod(j("owners", "dev-big"), 0o20600, os.makedev(1, 7))
    os.lchown(j("owners", "dev-big"), 3000000, 5)

    # Names: newline, backslash, non-UTF-8, spaces, UTF-8, PAX-looking, leading dash.
    for raw in (b"new\nline", b"back\\slash", b"latin1-\xe9\xff", b"bad-utf8-\xc3\x28",
                b"with space", b"utf8-\xc3\xa9\xe6\x97\xa5", b"12 path=x", b"-dash",
                b"tab\there", b"quote\"'", b"star*?[", b"\x01ctrl"):
        write(os.path.join(os.fsencode(j("names")), raw), raw)
    os.symlink(b"new\nline-target\xff", os.path.join(os.fsencode(j("names")), b"sym\xfe"))

    # Xattrs: user.* (text, binary, empty, large), trusted.* (root), security.capability.
    write(j("xattr", "user"), b"x")
    setx(j("xattr", "user"), "user.text", b"hello", notes)
    setx(j("xattr", "user"), "user.bin", b"\x00\xff\x01\x02", notes)
    setx(j("xattr", "user"), "user.empty", b"", notes)
    setx(j("xattr", "user"), "user.big", data("xb", 3000), notes)
    setx(j("xattr", "user"), "user.utf8-\u00e9", b"v", notes)
    write(j("xattr", "trusted"), b"x")
    setx(j("xattr", "trusted"), "trusted.cfs-test", b"t", notes)
    write(j("xattr", "cap"), b"\x7fELF fake\n", 0o755)
    r = subprocess.run(["setcap", "cap_net_bind_service,cap_net_raw=+ep", j("xattr", "cap")],
                       stderr=subprocess.PIPE)
    if r.returncode != 0:
        notes.append("setcap failed: %s" % r.stderr.decode().strip())
    os.mkdir(j("xattr", "dir"))
    setx(j("xattr", "dir"), "user.dir", b"on a directory", notes)
    os.symlink("user", j("xattr", "sym"))
    setx(j("xattr", "sym"), "trusted.on-symlink", b"s", notes)
    write(j("xattr", "hl1"), b"xattr hardlink")
    setx(j("xattr", "hl1"), "user.shared", b"both names", notes)
    os.link(j("xattr", "hl1"), j("xattr", "hl2"))

    # Cross-layer hard link: two independent files here; layer 2 makes b a link to a.
    write(j("xl", "a"), data("xl", 2000))
    write(j("xl", "b"), b"replaced by a hard link in layer 2\n")

    # Times: set last, deepest first, so directory mtimes stay. Nanoseconds, before 1970,
    # the oldest ext4 keeps (-2^31), after 2038, after 2106 (33 bits), 2400.
    stamps = {
        ("times", "ns"): (1700000000, 123456789),
        ("times", "epoch"): (0, 0),
        ("times", "minus1"): (-1, 0),
        ("times", "1960"): (-315619200, 500000000),
        ("times", "1901"): (-2 ** 31, 0),  # ext4's oldest
        ("times", "2038"): (2 ** 31, 0),
        ("times", "2107"): (2 ** 32 + 100, 0),
        ("times", "2242"): (2 ** 33, 999999999),
        ("times", "2400"): (13569465600, 0),
    }
    for (d, name), _ in stamps.items():
        write(j(d, name), name.encode())
    os.symlink("ns", j("times", "sym-1960"))
    os.mkdir(j("times", "dir-1960"))
    stamps[("times", "sym-1960")] = (-315619200, 0)
    stamps[("times", "dir-1960")] = (-315619200, 0)
    all_paths = []
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for n in dirnames + filenames:
            all_paths.append(os.path.join(dirpath, n))
    all_paths.sort(key=lambda p: -p.count(b"/"))
    base_ts = 1600000000
    for p in all_paths + [os.fsencode(root)]:
        rel = os.path.relpath(p, os.fsencode(root)).decode(errors="replace")
        key = tuple(rel.split("/"))
        sec, ns = stamps.get(key, (base_ts, 0))
        try:
            os.utime(p, ns=(sec * 10 ** 9 + ns, sec * 10 ** 9 + ns), follow_symlinks=False)
        except OSError as e:
            notes.append("utime %s %d refused: %s" % (rel, sec, e))
        if os.lstat(p).st_mtime_ns != sec * 10 ** 9 + ns:
            notes.append("filesystem does not keep mtime %d.%09d of %s" % (sec, ns, rel))
    return notes


def make_layer2(root):
    os.makedirs(os.path.join(root, "xl"))
    a = os.path.join(root, "xl", "a")
    write(a, data("xl", 2000))
    os.link(a, os.path.join(root, "xl", "b"))
    for p in (a, os.path.join(root, "xl"), root):
        os.utime(p, ns=(1600000000 * 10 ** 9,) * 2)
