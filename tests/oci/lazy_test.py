#!/usr/bin/env python3
"""`cfsctl oci pull --lazy` against a real registry (Debian's docker-registry on 127.0.0.1,
images made zstd:chunked by skopeo, as in chunked_test.py).

Checks: the provisional image is mounted (FUSE, in cfsctl's process) before the contents are
fetched; with the background fetch throttled (--lazy-rate-limit), the last file in TOC order
is read first and so is fetched on demand (the pull's "lazy" line counts it); `ls` and every
file's content through the mount equal the image's files; the pull then tags the image with
the image id of a normal (--no-partial) pull, fsck and oci fsck pass; a tampered content is
refused on demand with EIO, the pull ends without tagging and the repository stays clean;
unthrottled, every file reads correctly right after the mount appears (contents the
background fetched are opened by their object names). A large file (which containers/storage
splits into many chunks) is served chunk by chunk: a 4 KiB read in its middle fetches a small
part of it (bytes counted by a forwarder in front of the registry), a tampered chunk gives EIO
for a read in it while reads elsewhere in the file succeed.
Exit 77 (skip) when docker-registry, skopeo, zstd or FUSE is missing.
"""
import argparse
import errno
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chunked_test as ct  # noqa: E402
import registry_test as rt  # noqa: E402

check = rt.check


class LazyPull:
    """cfsctl oci pull --lazy running in the background; its stdout read line by line."""

    def __init__(self, cfsctl, repo, source, mnt, *opts):
        self.mnt = mnt
        self.proc = subprocess.Popen(
            [cfsctl, "--repo", repo, "oci", "pull", source, "lazy", "--lazy", "--mount", mnt,
             *opts], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.out = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix, timeout):
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                return None
            if line is None:
                return None
            self.out.append(line)
            if line.startswith(prefix):
                return line

    def stop(self):
        subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        while self.wait_for("\0", 1) is not None:
            pass
        return self.proc.returncode, "\n".join(self.out), self.proc.stderr.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cfsctl", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    for tool in ("docker-registry", "skopeo", "zstd", "fusermount3"):
        if not shutil.which(tool):
            print(f"SKIP: {tool} is not installed (tools/setup-deps.sh)")
            return 77
    if not os.path.exists("/dev/fuse"):
        print("SKIP: no /dev/fuse")
        return 77
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    work = tempfile.mkdtemp(dir=args.work)
    cfs = rt.Cfs(args.cfsctl, work)
    reg = rt.Registry(work, rt.free_port())
    tarfile.RECORDSIZE = tarfile.BLOCKSIZE  # see chunked_test.py
    pulls = []
    try:
        reg.start()
        host = f"127.0.0.1:{reg.port}"
        rnd = random.Random("lazy")
        base = [("etc/os-release", b"ID=lazy\n"), ("usr/bin/hello", b"#!/bin/sh\necho hi\n")]
        files = [(f"usr/lib/f{i:02}", rnd.randbytes(rnd.randint(20000, 80000)))
                 for i in range(30)]
        files += [(f"usr/share/s{i}", rnd.randbytes(rnd.randint(1, 300))) for i in range(10)]
        expected = dict(base + files)
        layout = os.path.join(work, "img")
        rt.make_layout(layout, "v1", [base, files], compress=False)
        source = f"docker://{host}/test/lazy:v1"
        rt.skopeo_push(f"oci:{layout}:v1", source, "--dest-compress-format", "zstd:chunked")
        m = ct.manifest_of(host, "test/lazy:v1")
        top = m["layers"][-1]
        total = sum(l["size"] for l in m["layers"])
        _, _, toc = ct.toc_of(ct.blob_path(reg, top["digest"]), top)
        last = [e for e in toc["entries"] if e.get("type") == "reg" and e.get("size", 0) > 64][-1]
        last_name = last["name"].lstrip("./")

        # The background fetch takes about 8 s at this rate: the last file is read long before.
        repo = cfs.repo()
        mnt = tempfile.mkdtemp(dir=work)
        lazy = LazyPull(args.cfsctl, repo, source, mnt, "--lazy-rate-limit", str(total // 8))
        pulls.append(lazy)
        serving = lazy.wait_for("serving ", 60)
        check(serving is not None, f"the provisional image is served: {serving}")
        with open(os.path.join(mnt, last_name), "rb") as f:
            data = f.read()
        check(data == expected[last_name], f"{last_name} (last in TOC order) read first")
        check(sorted(os.listdir(os.path.join(mnt, "usr", "lib"))) ==
              sorted(n.split("/")[-1] for n in expected if n.startswith("usr/lib/")),
              "ls of the mount lists the image's files")
        done = lazy.wait_for("image ", 120)
        check(done is not None and "wholly local" in (lazy.wait_for("image ", 30) or ""),
              "the pull ends with the image wholly local")
        for name, content in expected.items():
            with open(os.path.join(mnt, name), "rb") as f:
                if f.read() != content:
                    check(False, f"{name}: content through the mount")
                    break
        else:
            check(True, f"all {len(expected)} files read through the mount equal the image's")
        rc, out, err, counts = finish_pull(lazy, pulls)
        check(rc == 0 and counts["on demand"] >= 1,
              "exit 0; the file read first was fetched on demand")
        full_repo = cfs.repo()
        full = cfs.pull(full_repo, source, "--no-partial")
        check(full.returncode == 0 and rt.field(full.stdout, "image") == rt.field(out, "image"),
              f"same image id as a full pull ({rt.field(full.stdout, 'image')})")
        images = cfs.run(repo, "oci", "images")
        check("lazy" in images.stdout, "the lazy pull tagged its image")
        check(cfs.run(repo, "fsck").returncode == 0 and cfs.run(repo, "oci", "fsck").returncode == 0,
              "fsck and oci fsck pass after the lazy pull")

        # Unthrottled, the background fetches everything at once, so these reads open contents
        # it fetched: each must be linked under its object name before it counts as fetched.
        fast_repo = cfs.repo()
        fast_mnt = tempfile.mkdtemp(dir=work)
        fast = LazyPull(args.cfsctl, fast_repo, source, fast_mnt)
        pulls.append(fast)
        check(fast.wait_for("serving ", 60) is not None, "unthrottled: served")
        unreadable = []
        for name, content in expected.items():
            try:
                with open(os.path.join(fast_mnt, name), "rb") as f:
                    if f.read() != content:
                        unreadable.append(name)
            except OSError as e:
                unreadable.append(f"{name} ({e.strerror})")
        check(not unreadable, f"unthrottled: every file reads as the image's ({unreadable[:3]})")
        fast.wait_for("image ", 120)
        check("wholly local" in (fast.wait_for("image ", 30) or ""),
              "unthrottled: the pull ends with the image wholly local")
        rc, _, err = fast.stop()
        pulls.remove(fast)
        check(rc == 0, f"unthrottled: exit 0 ({err.strip()[-200:]})")

        # A tampered content: EIO on demand, nothing tagged, the repository consistent.
        blob = ct.blob_path(reg, top["digest"])
        where = (last["offset"] + last["endOffset"]) // 2
        ct.flip(blob, where)
        try:
            bad_repo = cfs.repo()
            mnt2 = tempfile.mkdtemp(dir=work)
            lazy = LazyPull(args.cfsctl, bad_repo, source, mnt2, "--lazy-rate-limit",
                            str(total // 8))
            pulls.append(lazy)
            check(lazy.wait_for("serving ", 60) is not None, "tampered: served")
            code = read_errno(os.path.join(mnt2, last_name))
            check(code == errno.EIO, f"tampered: reading {last_name} gives EIO ({code})")
            ok = os.path.join(mnt2, "usr", "share", "s0")
            with open(ok, "rb") as f:
                check(f.read() == expected["usr/share/s0"], "tampered: other files still read")
            check_refused(cfs, lazy, pulls, bad_repo, last_name, "tampered")
        finally:
            ct.flip(blob, where)
        large_file(args, cfs, reg, work, pulls)
    finally:
        for p in pulls:
            print(p.stop()[2], file=sys.stderr)
        reg.kill()
    return rt.result(work)


def read_at(path, offset, length):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def read_errno(path, offset=0, length=None):
    """0 when path reads (length bytes from offset; None: all of it), else the errno of the
    failure."""
    try:
        if length is None:
            with open(path, "rb") as f:
                f.read()
        else:
            read_at(path, offset, length)
        return 0
    except OSError as e:
        return e.errno


def finish_pull(lazy, pulls, label="lazy"):
    """Stops a lazy pull; returns rc, out, err and the counts of its "lazy" line
    ({"on demand": N, "chunks for reads": N}; 0 where the line lacks them)."""
    rc, out, err = lazy.stop()
    pulls.remove(lazy)
    if rc != 0:
        print(err, file=sys.stderr)
    line = rt.field(out, "lazy") or ""
    print(f"     {label}: {line}")
    counts = {}
    for key, pattern in (("on demand", r"(\d+) fetched on demand"),
                         ("chunks for reads", r"(\d+) chunks fetched for reads")):
        m = re.search(pattern, line)
        counts[key] = int(m.group(1)) if m else 0
    return rc, out, err, counts


def check_refused(cfs, lazy, pulls, repo, name, label):
    """A lazy pull that met tampered content ends failing, naming the file, with nothing
    tagged and fsck and oci fsck clean."""
    rc, out, err = lazy.stop()
    pulls.remove(lazy)
    print("     " + "\n     ".join(err.strip().splitlines()[-2:]))
    check(rc != 0 and "tampered" in err and name in err, f"{label}: the pull fails naming the file")
    images = cfs.run(repo, "oci", "images")
    check(images.returncode == 0 and "lazy" not in images.stdout, f"{label}: nothing tagged")
    check(cfs.run(repo, "fsck").returncode == 0 and cfs.run(repo, "oci", "fsck").returncode == 0,
          f"{label}: fsck and oci fsck pass")


def large_file(args, cfs, reg, work, pulls):
    """A 32 MiB incompressible file with a run of zeros (a "zeros" chunk), served chunk by
    chunk while the background crawls."""
    host = f"127.0.0.1:{reg.port}"
    rnd = random.Random("large")
    size = 32 << 20
    big = rnd.randbytes(8 << 20) + bytes(1 << 20) + rnd.randbytes(size - (9 << 20))
    name = "usr/lib/big.bin"
    layout = os.path.join(work, "big")
    rt.make_layout(layout, "v1", [[(name, big), ("etc/small", b"small\n")]], compress=False)
    rt.skopeo_push(f"oci:{layout}:v1", f"docker://{host}/test/big:v1", "--dest-compress-format",
                   "zstd:chunked")
    m = ct.manifest_of(host, "test/big:v1")
    layer = m["layers"][-1]
    _, _, toc = ct.toc_of(ct.blob_path(reg, layer["digest"]), layer)
    entries = [e for e in toc["entries"] if e.get("name", "").lstrip("./") == name]
    chunks = [(e.get("chunkOffset", 0), e["offset"]) for e in entries]
    zeros = sum(e.get("chunkType") == "zeros" for e in entries)
    check(len(chunks) >= 16 and all(e.get("chunkDigest") for e in entries) and zeros >= 1,
          f"containers/storage split the large file into {len(chunks)} chunks with digests, "
          f"{zeros} of them zeros")

    fwd = rt.CountingForwarder(rt.free_port(), reg.port)
    source = f"docker://127.0.0.1:{fwd.sock.getsockname()[1]}/test/big:v1"
    try:
        repo = cfs.repo()
        mnt = tempfile.mkdtemp(dir=work)
        lazy = LazyPull(args.cfsctl, repo, source, mnt, "--lazy-rate-limit", "65536")
        pulls.append(lazy)
        check(lazy.wait_for("serving ", 60) is not None, "large: served")
        middle = size // 2 + 12345
        data = read_at(os.path.join(mnt, name), middle, 4096)
        fetched = fwd.bytes_received()
        check(data == big[middle:middle + 4096] and fetched < size // 8,
              f"large: a 4 KiB read in the middle is right after {fetched} bytes of "
              f"{size} were fetched")
        with open(os.path.join(mnt, name), "rb") as f:
            check(f.read() == big, "large: the whole file reads as the image's")
        check("wholly local" in (lazy.wait_for("image ", 120) or "") + (lazy.wait_for("image ", 30) or ""),
              "large: the pull ends with the image wholly local")
        rc, out, err, counts = finish_pull(lazy, pulls, "large")
        check(rc == 0 and counts["chunks for reads"] >= 16,
              f"large: exit 0, chunks fetched for reads ({err.strip()[-200:]})")
        check(cfs.run(repo, "fsck").returncode == 0 and cfs.run(repo, "oci", "fsck").returncode == 0,
              "large: fsck and oci fsck pass")

        # One chunk in the middle tampered: reads in it fail, reads elsewhere do not.
        k = len(chunks) // 2
        (bad_at, frame), (next_at, next_frame) = chunks[k], chunks[k + 1]
        blob = ct.blob_path(reg, layer["digest"])
        where = (frame + next_frame) // 2
        ct.flip(blob, where)
        try:
            bad_repo = cfs.repo()
            mnt2 = tempfile.mkdtemp(dir=work)
            lazy = LazyPull(args.cfsctl, bad_repo, source, mnt2, "--lazy-rate-limit", "65536")
            pulls.append(lazy)
            check(lazy.wait_for("serving ", 60) is not None, "large tampered: served")
            code = read_errno(os.path.join(mnt2, name), bad_at, 4096)
            check(code == errno.EIO, f"large tampered: a read in chunk {k} gives EIO ({code})")
            good = chunks[2][0]
            check(read_at(os.path.join(mnt2, name), good, 4096) == big[good:good + 4096],
                  "large tampered: a read in another chunk of the file succeeds")
            check_refused(cfs, lazy, pulls, bad_repo, name, "large tampered")
        finally:
            ct.flip(blob, where)
    finally:
        fwd.close()


if __name__ == "__main__":
    sys.exit(main())
