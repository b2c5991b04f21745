#!/usr/bin/env python3
"""Tar conformance corpus (issue 12): every tar writer Debian offers, real Debian payloads.

  corpus.py --cfsctl BUILD/bin/cfsctl [--work DIR] [--only W1,W2] [--debs N] [--no-synthetic]
            [--cache DIR] [--keep] [--strict] [--fuse]

Synthetic part: ONE source tree with every file type and corner case (tree.py) is written by
GNU tar (gnu, oldgnu, posix, ustar, v7; -S with gnu, oldgnu and posix sparse 0.0/0.1/1.0;
listed-incremental gnu and posix), bsdtar (pax, paxr, ustar, gnutar, v7tar), cpio (ustar,
tar), MirBSD pax (ustar, tar), busybox tar, git archive, Python tarfile (GNU, PAX, USTAR), Go
archive/tar (PAX as Docker writes it, PAX with nanoseconds, GNU, USTAR) and buildah (a real
container layer). Each tar becomes a layer of an OCI layout; a second layer adds a hard link
to a file of the first (cross-layer hard link). The image is pulled with cfsctl, mounted by
the kernel, and compared with GNU tar's own extraction of the SAME tars (as root,
--numeric-owner, --xattrs --xattrs-include='*'): type, mode, owner, mtime (ns), rdev, size,
content, symlink target, hard-link groups, nlink and xattrs must agree. Entries a writer
cannot represent are missing from its tar and so from both sides; they are printed as
"writer left out". Per-writer exclusions (the 9 GiB sparse file for writers without sparse
files, v7 writers' dangling FIFO link) are printed with their reason. A writer whose whole
tree fails is re-run per top-level directory. known-failures.txt lists reported defects
that do not fail the run (--strict: they do).

Debian part: data.tar of N small Debian packages (tests/conformance/debs.txt), ten per
image, compared the same way.

cfs policy (docs/RELIABILITY.md), applied to the extraction before comparing:
  * xattrs: images keep security.capability and user.* (pulled with --xattrs
    keep-user-xattrs); trusted.* and other namespaces are dropped;
  * the root directory takes /usr's metadata, /run is emptied (transform_for_oci): the root
    is not compared and /run/* is expected absent.
Times before 1970 and after 2106 are compared like any other: the image keeps signed times.
Exit status 0 only with 0 differences outside known-failures.txt; 77 when not root.
"""
import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tree as tree_mod  # noqa: E402

XATTR_KEEP = lambda name: name == b"security.capability" or name.startswith(b"user.")  # noqa


def log(*a):
    print(*a, flush=True)


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (
            " ".join(map(str, cmd)), r.returncode, r.stderr.decode(errors="replace")[-2000:]))
    return r


# ---------------------------------------------------------------------------------------
# Writers: function(src_dir, out_tar) -> list of diagnostic lines (entries left out etc.)

class NotApplicable(Exception):
    """The writer has no such mode (e.g. GNU tar -S with ustar)."""


def diag(r):
    return [l if len(l) < 220 else l[:200] + "...(%d chars)" % len(l)
            for l in r.stderr.decode(errors="replace").splitlines() if l.strip()]


def gnutar_writer(fmt, sparse=False, sparse_version=None, incremental=False):
    def w(src, out):
        cmd = ["tar", "--format=" + fmt, "--numeric-owner", "--sort=name", "-C", src,
               "-cf", out]
        if fmt == "posix":
            # Only with posix: --xattrs/--acls make GNU tar add PAX headers to any format.
            cmd[1:1] = ["--xattrs", "--xattrs-include=*", "--acls"]
        if sparse:
            cmd.insert(1, "-S")
        if sparse_version:
            cmd.insert(1, "--sparse-version=" + sparse_version)
        if fmt == "posix" and not incremental:
            cmd.insert(1, "--pax-option=delete=atime,delete=ctime")
        if incremental:  # a level-0 dump: GNU 'D' dumpdir members / PAX GNU.dumpdir records
            snap = out + ".snar"
            if os.path.exists(snap):
                os.unlink(snap)
            cmd.insert(1, "--listed-incremental=" + snap)
        r = run(cmd + ["."], check=False)
        if incremental and os.path.exists(out + ".snar"):
            os.unlink(out + ".snar")
        if b"incompatible archive format" in r.stderr:
            raise NotApplicable(r.stderr.decode(errors="replace").splitlines()[0])
        if r.returncode not in (0, 2) or not os.path.exists(out):
            raise RuntimeError("tar failed: %s" % r.stderr.decode(errors="replace"))
        return diag(r)
    return w


def bsdtar_writer(fmt):
    def w(src, out):
        r = run(["bsdtar", "--format", fmt, "--numeric-owner", "-C", src, "-cf", out, "."],
                check=False)
        if not os.path.exists(out):
            raise RuntimeError("bsdtar failed: %s" % r.stderr.decode(errors="replace"))
        return diag(r)
    return w


def shell_writer(tool, script):
    """A writer run as a shell command in the source directory ($OUT: the tar)."""
    def w(src, out):
        if not shutil.which(tool):
            raise NotApplicable("%s is not installed" % tool)
        r = subprocess.run(["sh", "-c", script], cwd=src, env=dict(os.environ, OUT=out),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if not os.path.exists(out) or os.path.getsize(out) == 0:
            raise RuntimeError("%s failed: %s" % (tool, r.stderr.decode(errors="replace")))
        return diag(r)
    return w


def git_writer():
    """git archive: regular files and symlinks only (git keeps no owners, devices, empty
    directories or xattrs; modes become 0644/0755, every mtime the commit time), long names in
    PAX records and a PAX global header ('g') carrying the commit id."""
    def w(src, out):
        if not shutil.which("git"):
            raise NotApplicable("git is not installed")
        repo = out + ".git"
        shutil.rmtree(repo, ignore_errors=True)
        env = dict(os.environ, GIT_DIR=repo, GIT_WORK_TREE=src, GIT_AUTHOR_NAME="cfs",
                   GIT_AUTHOR_EMAIL="cfs@example.invalid", GIT_COMMITTER_NAME="cfs",
                   GIT_COMMITTER_EMAIL="cfs@example.invalid",
                   GIT_AUTHOR_DATE="1700000000 +0000", GIT_COMMITTER_DATE="1700000000 +0000")
        run(["git", "init", "-q", "--bare", repo])
        r = run(["git", "-c", "core.quotepath=off", "add", "-A", "."], cwd=src, env=env,
                check=False)
        run(["git", "commit", "-q", "--allow-empty", "-m", "corpus"], cwd=src, env=env)
        with open(out, "wb") as f:
            subprocess.run(["git", "archive", "--format=tar", "HEAD"], stdout=f, env=env,
                           check=True)
        shutil.rmtree(repo)
        return diag(r)
    w.single_layer = "git has no hard links"
    return w


def python_writer(fmt):
    """tarfile with the entries added one by one (add() would recurse), xattrs as
    SCHILY.xattr.* PAX records (PAX only), and hard links chained: each later name of an inode
    links to the PREVIOUS name, so a link to a link is in the stream."""
    def w(src, out):
        msgs = []
        last_name = {}
        with tarfile.open(out, "w", format=fmt) as tf:
            paths = []
            for dirpath, dirnames, filenames in os.walk(src.encode()):
                dirnames.sort()
                for n in sorted(dirnames + filenames):
                    paths.append(os.path.join(dirpath, n))
            paths.sort()
            for p in [src.encode()] + paths:
                rel = os.path.relpath(p, src.encode())
                arc = "./" if rel == b"." else "./" + os.fsdecode(rel)
                try:
                    ti = tf.gettarinfo(os.fsdecode(p), arcname=arc)
                except Exception as e:  # noqa
                    msgs.append("skip: %r: %s" % (arc, e))
                    continue
                st = os.lstat(p)
                key = (st.st_dev, st.st_ino)
                if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                    if key in last_name:
                        ti.type = tarfile.LNKTYPE
                        ti.linkname = last_name[key]
                        ti.size = 0
                ti.uname = ti.gname = ""
                if fmt == tarfile.PAX_FORMAT:
                    pax = {}
                    for name in os.listxattr(p, follow_symlinks=False):
                        v = os.getxattr(p, name, follow_symlinks=False)
                        pax["SCHILY.xattr." + name] = v.decode("utf-8", "surrogateescape")
                    ti.pax_headers = pax
                try:
                    if ti.type == tarfile.REGTYPE:
                        with open(p, "rb") as f:
                            tf.addfile(ti, f)
                    else:
                        tf.addfile(ti)
                except Exception as e:  # noqa
                    msgs.append("skip: %r: %s" % (arc, e))
                    continue
                if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                    last_name[key] = arc
        return msgs
    return w


def go_writer(fmt, gotar):
    def w(src, out):
        r = run([gotar, "-format", fmt, "-o", out, src], check=False)
        if r.returncode != 0:
            raise RuntimeError("gotar failed: %s" % r.stderr.decode(errors="replace"))
        return diag(r)
    return w


def writers(gotar):
    ws = []
    for fmt in ("gnu", "oldgnu", "posix", "ustar", "v7"):
        ws.append(("gnutar-" + fmt, gnutar_writer(fmt)))
        if fmt in ("gnu", "oldgnu"):
            ws.append(("gnutar-%s-S" % fmt, gnutar_writer(fmt, sparse=True)))
        elif fmt == "posix":
            for v in ("0.0", "0.1", "1.0"):
                ws.append(("gnutar-posix-S%s" % v, gnutar_writer(fmt, True, v)))
        else:
            ws.append(("gnutar-%s-S" % fmt, gnutar_writer(fmt, sparse=True)))
        if fmt in ("gnu", "posix"):
            ws.append(("gnutar-%s-G" % fmt, gnutar_writer(fmt, incremental=True)))
    # v7 has no FIFO or device type: bsdtar v7tar and MirBSD pax -x tar leave the first name
    # of a hard-linked FIFO out but write the second as a hard link to it, a dangling link
    # (GNU tar skips that member with an error; cfs refuses a layer with a link to a missing
    # file). The hard-linked FIFO and device are left out of their source.
    v7_excl = (["hl/fifo1", "hl/fifo2", "hl/dev1", "hl/dev2", "sparse/huge"],
               "v7 has no FIFO or device type and these writers would write a dangling "
               "hard link to the FIFO they left out; no sparse files (9 GiB of zeros)")
    huge = (["sparse/huge"], "no sparse files: the 9 GiB file would be 9 GiB of zeros")
    sparse_writers = ("gnutar-gnu-S", "gnutar-oldgnu-S", "gnutar-posix-S0.0",
                      "gnutar-posix-S0.1", "gnutar-posix-S1.0", "bsdtar-pax", "bsdtar-paxr")
    for fmt in ("pax", "paxr", "ustar", "gnutar", "v7tar"):
        ws.append(("bsdtar-" + fmt, bsdtar_writer(fmt)))
        if fmt == "v7tar":
            ws[-1][1].excludes = v7_excl
    # cpio, MirBSD pax and busybox also write tar.
    for fmt in ("ustar", "tar"):
        ws.append(("cpio-" + fmt, shell_writer(
            "cpio", "find . -print0 | cpio -o -0 --quiet -H %s -F \"$OUT\"" % fmt)))
    for fmt in ("ustar", "tar"):
        ws.append(("pax-" + fmt, shell_writer("pax", "pax -w -x %s -f \"$OUT\" ." % fmt)))
        if fmt == "tar":
            ws[-1][1].excludes = v7_excl
    ws.append(("busybox-tar", shell_writer("busybox", "busybox tar -cf \"$OUT\" .")))
    ws.append(("git-archive", git_writer()))
    for name, fmt in (("gnu", tarfile.GNU_FORMAT), ("pax", tarfile.PAX_FORMAT),
                      ("ustar", tarfile.USTAR_FORMAT)):
        ws.append(("python-" + name, python_writer(fmt)))
    if gotar:
        for fmt in ("pax", "pax-ns", "gnu", "ustar"):
            ws.append(("go-" + fmt, go_writer(fmt, gotar)))
    for name, w in ws:
        if name not in sparse_writers and not getattr(w, "excludes", None):
            w.excludes = huge
    return ws


# ---------------------------------------------------------------------------------------
# OCI layout

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_blob(layout, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", d), "wb") as f:
        f.write(data)
    return d, len(data)


def make_layout(layout, tars, tag="latest"):
    """One image whose layers are the uncompressed TARS, in order."""
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    layers, diff_ids = [], []
    for t in tars:
        d = sha256_file(t)
        dst = os.path.join(layout, "blobs", "sha256", d)
        if not os.path.exists(dst):
            try:
                os.link(t, dst)
            except OSError:
                shutil.copyfile(t, dst)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                       "digest": "sha256:" + d, "size": os.path.getsize(t)})
        diff_ids.append("sha256:" + d)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cd, cs = write_blob(layout, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + cd, "size": cs},
        "layers": layers}).encode()
    md, ms = write_blob(layout, manifest)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)


# ---------------------------------------------------------------------------------------
# Comparator

def scan(root):
    """relpath (bytes) -> record; root itself excluded."""
    out = {}
    rootb = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(rootb):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, rootb)
            st = os.lstat(p)
            rec = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
                   "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns,
                   "ino": (st.st_dev, st.st_ino), "nlink": st.st_nlink}
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if stat.S_ISREG(st.st_mode):
                rec["size"] = st.st_size
                rec["sha256"] = content_hash(p, st.st_size)
            if stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p)
            xs = {}
            try:
                for name in os.listxattr(p, follow_symlinks=False):
                    xs[name.encode()] = os.getxattr(p, name, follow_symlinks=False)
            except OSError:
                pass
            rec["xattrs"] = xs
            out[rel] = rec
    groups = {}
    for rel, rec in out.items():
        if rec["type"] != stat.S_IFDIR:
            groups.setdefault(rec["ino"], []).append(rel)
    for rel, rec in out.items():
        if rec["type"] != stat.S_IFDIR:
            rec["links"] = tuple(sorted(groups[rec["ino"]]))
        del rec["ino"]
        if rec["type"] == stat.S_IFDIR:
            del rec["nlink"]  # directory link counts are the filesystem's business
    return out


ZERO = bytes(1 << 16)


def content_hash(path, size):
    """sha256 over (offset, block) of every 64 KiB block that is not all zeros: equal for equal
    contents however the holes are stored, and only the data regions (SEEK_DATA) are read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        fd = f.fileno()
        pos = 0
        while pos < size:
            try:
                pos = os.lseek(fd, pos, os.SEEK_DATA)
                end = os.lseek(fd, pos, os.SEEK_HOLE)
            except OSError:  # no more data (ENXIO) or no SEEK_DATA: read the rest
                break
            pos -= pos % len(ZERO)
            os.lseek(fd, pos, os.SEEK_SET)
            while pos < end:
                block = f.read(len(ZERO))
                if not block:
                    break
                if block != ZERO[:len(block)]:
                    h.update(b"%d:" % pos + block)
                pos += len(block)
    return h.hexdigest()[:16]


def show(rel):
    """The path as a Python bytes literal, long runs of one component shortened."""
    parts = []
    for c in rel.split(b"/"):
        if len(c) > 40:
            c = c[:12] + b"...(%d bytes)" % len(c)
        parts.append(c)
    return repr(b"/".join(parts))[1:]


def short(v):
    if v is None:
        return "(none)"
    return repr(v) if len(v) <= 40 else "%r...(%d bytes)" % (v[:24], len(v))


def apply_policy(ref):
    """The extraction as cfs must show it: xattr allowlist, /run emptied."""
    notes = {"xattr": 0, "run": 0}
    exp = {}
    for rel, rec in ref.items():
        if rel.startswith(b"run/"):
            notes["run"] += 1
            continue
        rec = dict(rec)
        kept = {k: v for k, v in rec["xattrs"].items() if XATTR_KEEP(k)}
        notes["xattr"] += len(rec["xattrs"]) - len(kept)
        rec["xattrs"] = kept
        if "links" in rec:
            rec["links"] = tuple(l for l in rec["links"] if not l.startswith(b"run/"))
        exp[rel] = rec
    return exp, notes


def compare(expected, got, limit=200):
    diffs = []
    for rel in sorted(set(expected) | set(got)):
        e, g = expected.get(rel), got.get(rel)
        if e is None:
            diffs.append((rel, "%s: only in the mount" % show(rel)))
            continue
        if g is None:
            diffs.append((rel, "%s: missing in the mount" % show(rel)))
            continue
        for k in sorted(set(e) | set(g)):
            if k == "xattrs" and e.get(k) != g.get(k) and e.get(k) is not None \
                    and g.get(k) is not None:
                ex, gx = e[k], g[k]
                for n in sorted(set(ex) | set(gx)):
                    if ex.get(n) != gx.get(n):
                        diffs.append((rel, "%s: xattr %r expected %s got %s" % (
                            show(rel), n, short(ex.get(n)), short(gx.get(n)))))
                continue
            if e.get(k) != g.get(k):
                diffs.append((rel, "%s: %s expected %r got %r" % (
                    show(rel), k, e.get(k), g.get(k))))
    for _, d in diffs[:limit]:
        log("    DIFF " + d)
    if len(diffs) > limit:
        log("    ... %d more differences" % (len(diffs) - limit))
    return diffs


# ---------------------------------------------------------------------------------------

class Runner:
    def __init__(self, args):
        self.args = args
        self.cfsctl = os.path.abspath(args.cfsctl)
        self.work = args.work
        self.repo = os.path.join(self.work, "repo")
        self.results = []  # (name, status, detail)
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        run([self.cfsctl, "--repo", self.repo, "init", "--insecure"])
        self.n = 0
        self.last_error, self.last_diff_cats, self.last_diff_paths = "", [], []
        # known-failures.txt: WRITER-GLOB CATEGORY-GLOB REASON (reader bugs reported, not
        # yet fixed). Empty when --strict.
        self.known = []
        if not args.strict:
            for line in open(os.path.join(HERE, "known-failures.txt")):
                line = line.split("#")[0].strip()
                if line:
                    w, c, reason = line.split(None, 2)
                    self.known.append((w, c, reason))

    def extract(self, tars, dest):
        os.makedirs(dest)
        msgs = []
        for t in tars:
            # --delay-directory-restore: directory times and modes are set at the end, so an
            # archive that comes back to a directory later (bsdtar's order) does not leave the
            # extraction's time on it.
            r = run(["tar", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner",
                     "--delay-directory-restore", "-xpf", t, "-C", dest], check=False)
            msgs += diag(r)
        return msgs

    def check_image(self, name, tars, source_tree=None, record=True):
        """Pull TARS as one image, mount it, compare with GNU tar's extraction."""
        self.n += 1
        base = os.path.join(self.work, "i%d" % self.n)
        layout, ref, mnt = base + "-layout", base + "-ref", base + "-mnt"
        make_layout(layout, tars)
        t0 = time.time()
        r = run([self.cfsctl, "--repo", self.repo, "oci", "pull", "-q", "--xattrs",
                 "keep-user-xattrs", "oci:%s:latest" % layout, name], check=False)
        if r.returncode != 0:
            msg = re.sub(r"cfsctl: (oci:\S+ )?layer sha256:[0-9a-f]{64}: ", "",
                         r.stderr.decode(errors="replace").strip())
            log("  PULL FAILED: " + msg)
            self.last_error = msg
            self.last_diff_paths = []
            if record:
                self.results.append((name, "FAIL", "pull: " + msg[:200]))
            shutil.rmtree(layout, ignore_errors=True)
            return False
        t_pull = time.time() - t0
        for m in self.extract(tars, ref):
            if "implausibly old time stamp" not in m and "s in the future" not in m:
                log("  gnu tar -x: " + m)
        os.makedirs(mnt)
        run([self.cfsctl, "--repo", self.repo, "oci", "mount", "--xattrs", "keep-user-xattrs",
             name, mnt] + (["--fuse"] if self.args.fuse else []))
        try:
            got = scan(mnt)
        finally:
            subprocess.run(["umount", "-l", mnt])
        ref_scan = scan(ref)
        if source_tree is not None:
            src = scan(source_tree)
            left_out = sorted(set(src) - set(ref_scan))
            if left_out:
                log("  writer left out %d entries (absent from its tar, so from both sides):"
                    % len(left_out))
                for rel in left_out:
                    log("    - " + show(rel))
            lossy = {}
            for rel in set(src) & set(ref_scan):
                if rel.startswith(b"xl/"):
                    continue  # the cross-layer link: layer 2 changes it on purpose
                for k in src[rel]:
                    if k != "links" and src[rel][k] != ref_scan[rel].get(k):
                        lossy.setdefault(k, []).append(rel)
            for k, rels in sorted(lossy.items()):
                log("  writer did not keep %s of %d entries: %s" % (
                    k, len(rels), ", ".join(show(r) for r in sorted(rels)[:6]) +
                    (" ..." if len(rels) > 6 else "")))
        expected, notes = apply_policy(ref_scan)
        if notes["xattr"] or notes["run"]:
            log("  policy: %d xattrs outside security.capability/user.* dropped, "
                "%d entries under /run emptied" % (notes["xattr"], notes["run"]))
        diffs = compare(expected, got)
        status = "pass" if not diffs else "FAIL"
        log("  %s: %d entries, %d differences (pull %.1fs)" % (
            status, len(expected), len(diffs), t_pull))
        self.last_error = "%d differences" % len(diffs)
        self.last_diff_cats = sorted(set(os.fsdecode(rel.split(b"/")[0]) for rel, _ in diffs))
        self.last_diff_paths = sorted(set(os.fsdecode(rel) for rel, _ in diffs))
        if record:
            self.results.append((name, status, "%d entries, %d differences" % (
                len(expected), len(diffs))))
        if not self.args.keep:
            for d in (layout, ref, mnt):
                shutil.rmtree(d, ignore_errors=True)
        return not diffs

    # -- synthetic -------------------------------------------------------------------
    def cross_layer(self, writer, out):
        """Layer 2: xl/b becomes a hard link to layer 1's xl/a. The writer writes the pair
        a, b; the member holding the data is deleted with GNU tar --delete, leaving a lone
        hard-link member whose target is only in layer 1."""
        src = os.path.join(self.work, "l2src")
        shutil.rmtree(src, ignore_errors=True)
        tree_mod.make_layer2(src)
        msgs = writer(src, out)
        # GNU tar's own listing: Python's tarfile takes a GNU header's atime for a prefix.
        listing = run(["tar", "--quoting-style=literal", "--numeric-owner", "-tvf", out]
                      ).stdout.decode().splitlines()
        regs = [l.split(None, 5)[5] for l in listing
                if l.startswith("-") and "xl/" in l.split(None, 5)[5]]
        if len(regs) != 1:
            raise RuntimeError("layer 2: expected one data member, got %r" % regs)
        run(["tar", "--delete", "-f", out, regs[0]])
        shutil.rmtree(src)
        return msgs

    def synthetic(self, only):
        src = os.path.join(self.work, "src")
        notes = tree_mod.make_tree(src)
        log("source tree: %s" % src)
        for n in notes:
            log("  tree: " + n)
        gotar = self.build_gotar()
        full_src = src
        for name, w in writers(gotar):
            if only and name not in only:
                continue
            log("== %s" % name)
            src = full_src
            if self.args.fuse and not getattr(w, "excludes", None):
                w.excludes = (["sparse/huge"], "--fuse: cfs-fuse digest-checks each object "
                              "when it is opened, 9 GiB per image; the kernel run covers it")
            if getattr(w, "excludes", None):
                paths, why = w.excludes
                src = self.without(full_src, paths)
                log("  excluded from the source: %s (%s)" % (", ".join(paths), why))
            t1, t2 = os.path.join(self.work, name + ".l1.tar"), os.path.join(
                self.work, name + ".l2.tar")
            try:
                msgs = w(src, t1)
                for m in msgs[:12]:
                    log("  writer: " + m)
                if len(msgs) > 12:
                    log("  writer: ... %d more messages (the entries left out are listed below)"
                        % (len(msgs) - 12))
                if getattr(w, "single_layer", None):
                    log("  no cross-layer hard link: %s" % w.single_layer)
                    t2 = None
                else:
                    for m in self.cross_layer(w, t2):
                        log("  writer (layer 2): " + m)
            except NotApplicable as e:
                log("  not applicable: %s" % e)
                self.results.append((name, "n/a", str(e)))
                continue
            except Exception as e:  # noqa
                log("  WRITER FAILED: %s" % e)
                self.results.append((name, "FAIL", "writer: %s" % str(e)[:200]))
                continue
            ok = self.check_image(name, [t for t in (t1, t2) if t], source_tree=src,
                                  record=False)
            if not self.args.keep:
                for t in (t1, t2):
                    if t:
                        os.unlink(t)
            if ok:
                self.results.append((name, "pass", "all categories"))
                continue
            # One bad entry fails the whole pull and hides the rest: write each top-level
            # directory of the tree as its own image to see which kinds of entries fail.
            whole = self.last_error
            log("  by category (each top-level directory alone):")
            bad = []  # (category, reason)
            for cat in tree_mod.CATEGORIES:
                sub = self.subset(cat)
                if getattr(w, "excludes", None):
                    mine = [p for p in w.excludes[0] if p.startswith(cat + "/")]
                    if mine:
                        sub = self.without(sub, mine, "sub-excl")
                t1 = os.path.join(self.work, "%s.%s.tar" % (name, cat))
                tars = [t1]
                try:
                    w(sub, t1)
                    if cat == "xl" and not getattr(w, "single_layer", None):
                        tars.append(t1 + ".l2")
                        self.cross_layer(w, tars[1])
                except Exception as e:  # noqa
                    bad.append((cat, "writer: %s" % str(e)[:80]))
                    continue
                log("  -- %s/%s" % (name, cat))
                if not self.check_image("%s.%s" % (name, cat), tars, record=False):
                    if self.last_diff_paths:  # differences: name the paths
                        bad += [(p, "differences") for p in self.last_diff_paths]
                    else:
                        bad.append((cat, self.last_error[:160]))
                for t in tars:
                    os.unlink(t)
            self.record_failure(name, whole, bad)
        if not only or "buildah" in only:
            log("== buildah: sparse/huge excluded (containers/storage writes no sparse files)")
            self.buildah(self.without(full_src, ["sparse/huge"]))

    def record_failure(self, name, whole, bad):
        """A failing writer: "known" when every failing category is in known-failures.txt
        for it (a reader bug already reported), "FAIL" otherwise."""
        unknown = [(c, r) for c, r in bad if not self.known_reason(name, c)]
        for c, r in bad:
            k = self.known_reason(name, c)
            if k:
                log("  KNOWN %s/%s: %s (%s)" % (name, c, k, r))
        detail = "whole tree: %s; failing categories: %s" % (
            whole[:160], "; ".join("%s (%s)" % b for b in bad) if bad else "none")
        if bad and not unknown:
            self.results.append((name, "known", "; ".join(
                "%s: %s" % (c, self.known_reason(name, c)) for c, _ in bad)))
        else:
            self.results.append((name, "FAIL", detail))

    def known_reason(self, writer, cat):
        for pat, kcat, reason in self.known:
            if fnmatch.fnmatchcase(writer, pat) and fnmatch.fnmatchcase(cat, kcat):
                return reason
        return None

    def without(self, src, paths, dst_name="src-excl"):
        """A copy of SRC (cp -a: hard links, xattrs, devices, times) without PATHS."""
        dst = os.path.join(self.work, dst_name)
        shutil.rmtree(dst, ignore_errors=True)
        run(["cp", "-a", src, dst])
        for p in paths:
            full = os.path.join(dst, p)
            parent = os.path.dirname(full)
            st = os.lstat(parent)
            os.unlink(full)
            os.utime(parent, ns=(st.st_atime_ns, st.st_mtime_ns))
        return dst

    def subset(self, cat):
        """The tree with only its top-level directory CAT (built once per category)."""
        path = os.path.join(self.work, "sub-" + cat)
        if not os.path.exists(path):
            tree_mod.make_tree(path)
            for other in tree_mod.CATEGORIES:
                if other != cat:
                    shutil.rmtree(os.path.join(path, other))
        return path

    def build_gotar(self):
        if not shutil.which("go"):
            log("go: not installed (golang-go), Go archive/tar writer skipped")
            self.results.append(("go-*", "skipped", "golang-go not installed"))
            return None
        out = os.path.join(self.work, "gotar")
        env = dict(os.environ, GOFLAGS="-mod=mod", GOPROXY="off",
                   GOCACHE=os.path.join(self.work, "gocache"), CGO_ENABLED="0",
                   GOPATH=os.path.join(self.work, "gopath"), GOTOOLCHAIN="local")
        run(["go", "build", "-o", out, "."], cwd=os.path.join(HERE, "gotar"), env=env)
        return out

    def buildah(self, src):
        name = "buildah"
        log("== %s" % name)
        if not shutil.which("buildah"):
            log("  skipped: buildah not installed")
            self.results.append((name, "skipped", "buildah not installed"))
            return
        broot = os.path.join(self.work, "buildah")
        b = ["buildah", "--root", broot + "/root", "--runroot", broot + "/run",
             "--storage-driver", "vfs"]
        try:
            ctr = run(b + ["from", "scratch"]).stdout.decode().strip()
            mnt = run(b + ["mount", ctr]).stdout.decode().strip()
            # Copy the tree in with every attribute (GNU tar as root keeps all of them).
            r = subprocess.run("tar --xattrs --xattrs-include='*' --numeric-owner -C %s -cf - . "
                               "| tar --xattrs --xattrs-include='*' --numeric-owner -xpf - -C %s"
                               % (src, mnt), shell=True, stderr=subprocess.PIPE)
            for m in diag(r):
                log("  copy-in: " + m)
            run(b + ["umount", ctr])
            layout = os.path.join(broot, "layout")
            run(b + ["commit", "--format", "oci", ctr, "oci:%s:latest" % layout])
        except Exception as e:  # noqa
            log("  skipped: buildah cannot run here: %s" % e)
            self.results.append((name, "skipped", "buildah cannot run: %s" % str(e)[:150]))
            return
        idx = json.load(open(os.path.join(layout, "index.json")))
        md = idx["manifests"][0]["digest"].split(":")[1]
        man = json.load(open(os.path.join(layout, "blobs", "sha256", md)))
        tars = []
        for i, l in enumerate(man["layers"]):
            blob = os.path.join(layout, "blobs", "sha256", l["digest"].split(":")[1])
            t = os.path.join(broot, "layer%d.tar" % i)
            mt = l["mediaType"]
            dec = "gzip -dc" if "gzip" in mt else "zstd -dcq" if "zstd" in mt else "cat"
            run(["sh", "-c", "%s < '%s' > '%s'" % (dec, blob, t)])
            tars.append(t)
        log("  buildah commit: %d layer(s), %s" % (len(tars), man["layers"][0]["mediaType"]))
        if self.check_image(name, tars, source_tree=src, record=False):
            self.results.append((name, "pass", "all categories"))
        else:
            self.record_failure(name, self.last_error,
                                [(c, "differences") for c in self.last_diff_cats])
        subprocess.run(b + ["rm", "-a"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not self.args.keep:
            shutil.rmtree(broot, ignore_errors=True)

    # -- Debian ----------------------------------------------------------------------
    def debs(self, count):
        names = [l.split("#")[0].strip() for l in open(os.path.join(HERE, "debs.txt"))]
        names = [n for n in names if n][:count]
        cache = self.args.cache
        os.makedirs(cache, exist_ok=True)
        r = run([os.path.join(HERE, "fetch-debs.sh"), cache] + names, check=False)
        for m in diag(r):
            log("  fetch: " + m)
        debs = sorted(os.path.join(cache, f) for f in os.listdir(cache) if f.endswith(".deb"))
        debs = [d for d in debs if os.path.basename(d).split("_")[0] in set(names)]
        log("== debian: %d packages" % len(debs))
        if len(debs) < count:
            log("  only %d of %d packages available" % (len(debs), count))
        tdir = os.path.join(self.work, "debtars")
        os.makedirs(tdir, exist_ok=True)
        tars = []
        for d in debs:
            t = os.path.join(tdir, os.path.basename(d)[:-4] + ".tar")
            with open(t, "wb") as f:
                subprocess.run(["dpkg-deb", "--fsys-tarfile", d], stdout=f, check=True)
            tars.append(t)
        ok = True
        for i in range(0, len(tars), 10):
            group = tars[i:i + 10]
            log("== debian group %d: %s" % (i // 10, " ".join(
                os.path.basename(t).split("_")[0] for t in group)))
            ok &= self.check_image("debian-%d" % (i // 10), group)
        if len(tars) < count:
            self.results.append(("debian", "FAIL", "only %d of %d packages could be fetched"
                                 % (len(tars), count)))
        if not self.args.keep:
            shutil.rmtree(tdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cfsctl", required=True)
    ap.add_argument("--work", default=None)
    ap.add_argument("--only", default="")
    ap.add_argument("--debs", type=int, default=100)
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--cache", default=os.path.join(HERE, ".cache"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--fuse", action="store_true",
                    help="mount with cfs-fuse instead of the kernel (cfsctl oci mount --fuse)")
    ap.add_argument("--strict", action="store_true",
                    help="ignore known-failures.txt: every difference fails")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("corpus: needs root (devices, owners, trusted.* xattrs, kernel mounts)")
        return 77
    if args.work is None:
        args.work = tempfile.mkdtemp(prefix="cfs-conformance-", dir="/var/tmp")
    r = Runner(args)
    only = set(x for x in args.only.split(",") if x)
    if not args.no_synthetic:
        r.synthetic(only)
    if args.debs > 0 and (not only or "debian" in only):
        r.debs(args.debs)
    log("\n%-22s %-8s %s" % ("writer", "result", "detail"))
    for name, status, detail in r.results:
        log("%-22s %-8s %s" % (name, status, " ".join(detail.split())))
    failed = sum(1 for _, s, _ in r.results if s == "FAIL")
    passed = sum(1 for _, s, _ in r.results if s == "pass")
    skipped = sum(1 for _, s, _ in r.results if s in ("skipped", "n/a", "known"))
    log("\n%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
