#!/usr/bin/env python3
"""The registry killed in the middle of a partial pull's ranged GETs, for a zstd:chunked
layer (written by skopeo) and an eStargz layer (written by stargz-snapshotter's estargz
package, tests/oci/estargz-gen), against Debian's docker-registry on 127.0.0.1.

For each format: a one-layer image of 40 files is pulled into an empty repository at a
limited rate (through a slow TCP proxy); once a third of the layer went through, the registry process (started here)
is killed. Checks: the pull fails naming the registry and the layer blob, exits non-zero,
tags nothing, and the repository passes fsck and oci fsck. The registry is started again
on the same storage: the same pull completes with the image id of a full (--no-partial)
pull, reuses every file the failed attempt had completed (the content index keeps them),
and fetches no more than a fresh partial pull minus what it reused.
Exit 77 (skip) when docker-registry or skopeo is missing; the eStargz half is skipped with a
message when go or the estargz package is missing.
"""
import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import registry_test as rt  # noqa: E402
import estargz_test as et  # noqa: E402

check = rt.check


class SlowProxy:
    """A TCP proxy in front of the registry that delivers its answers at about rate bytes/s
    (the transfer must still be running when the registry is killed; curl's rate limit lets
    a few MiB on the loopback through at once). When the registry goes away the connection
    to the client is cut, as it would be by the registry itself."""

    def __init__(self, port, upstream_port, rate):
        self.port, self.upstream, self.rate = port, upstream_port, rate
        self.sent = 0  # bytes delivered to clients
        self.sock = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self.pump, args=(client, up, 0), daemon=True).start()
            threading.Thread(target=self.pump, args=(up, client, self.rate), daemon=True).start()

    def pump(self, src, dst, rate):
        piece = 16384
        try:
            while True:
                data = src.recv(piece)
                if not data:
                    break
                dst.sendall(data)
                if rate:
                    self.sent += len(data)
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.sock.close()


def indexed(repo):
    """(entries, bytes of their objects) of the content index."""
    idx = os.path.join(repo, "oci", "content-sha256")
    if not os.path.isdir(idx):
        return 0, 0
    n = size = 0
    for name in os.listdir(idx):
        target = os.path.join(idx, name)
        if os.path.exists(target):
            n += 1
            size += os.path.getsize(target)
    return n, size


def kill_mid_pull(cfs, reg, proxy, ref, label):
    host = f"127.0.0.1:{reg.port}"
    slow = f"127.0.0.1:{proxy.port}"
    ref_repo = cfs.repo()
    full = cfs.pull(ref_repo, f"docker://{host}/{ref}", "--no-partial")
    fresh_repo = cfs.repo()
    fresh = cfs.pull(fresh_repo, f"docker://{host}/{ref}")
    fresh_fetched = et.fetched_of(fresh)
    check(full.returncode == 0 and fresh.returncode == 0 and fresh_fetched > 0,
          f"{label}: full and fresh partial pulls succeed")

    repo = cfs.repo()
    proc = subprocess.Popen([cfs.cfsctl, "--repo", repo, "oci", "pull", f"docker://{slow}/{ref}",
                             "pulled", "--retry-times", "1",
                             "--retry-delay-ms", "200"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Killed once a third of the layer went through the proxy: in the middle of the ranged
    # GETs of the file contents (the TOC comes first and is small).
    proxy.sent = 0
    deadline = time.time() + 60
    while proxy.sent < fresh_fetched // 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    reg.kill()
    out, err = proc.communicate(timeout=120)
    last = err.strip().splitlines()[-1] if err.strip() else ""
    print("     error: " + last)
    check(proc.returncode != 0 and f"registry {slow}" in last and "blob sha256:" in last,
          f"{label}: registry killed mid-pull: the pull fails naming the registry and the blob")
    images = cfs.run(repo, "oci", "images")
    check(images.returncode == 0 and "pulled" not in images.stdout,
          f"{label}: registry killed: nothing tagged")
    check(cfs.run(repo, "fsck").returncode == 0 and cfs.run(repo, "oci", "fsck").returncode == 0,
          f"{label}: registry killed: fsck and oci fsck pass")
    done, done_bytes = indexed(repo)
    print(f"     {done} files ({done_bytes} bytes) completed before the kill")
    check(0 < done < 40, f"{label}: the kill came in the middle of the layer's files")

    reg.start()
    again = cfs.pull(repo, f"docker://{slow}/{ref}")
    fetched = et.fetched_of(again)
    print("     resumed: " + (rt.field(again.stdout, "partial") or ""))
    check(again.returncode == 0 and rt.field(again.stdout, "image") == rt.field(full.stdout, "image"),
          f"{label}: registry back: the same pull completes with the full pull's image id")
    reused = (rt.field(again.stdout, "partial") or "").split(" files (")[0].split(", ")[-1]
    check(reused.isdigit() and int(reused) >= done,
          f"{label}: registry back: the {done} files completed before are reused ({reused})")
    # eStargz: a file's last-chunk member is rebuilt from the tail the failed pull recorded.
    check(0 < fetched <= fresh_fetched - 0.8 * done_bytes,
          f"{label}: registry back: {fetched} bytes fetched, no more than what was missing "
          f"({fresh_fetched} for a fresh pull, {done_bytes} already there)")
    check(cfs.run(repo, "fsck").returncode == 0 and cfs.run(repo, "oci", "fsck").returncode == 0,
          f"{label}: after the resumed pull: fsck and oci fsck pass")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cfsctl", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--gen-dir", required=True)
    args = ap.parse_args()
    for tool in ("docker-registry", "skopeo"):
        if not shutil.which(tool):
            print(f"SKIP: {tool} is not installed (tools/setup-deps.sh)")
            return 77
    missing = et.missing_tools()
    gen = None if missing else et.build_generator(args.gen_dir)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    work = tempfile.mkdtemp(dir=args.work)
    cfs = rt.Cfs(args.cfsctl, work)
    reg = rt.Registry(work, rt.free_port())
    tarfile.RECORDSIZE = tarfile.BLOCKSIZE  # see chunked_test.py
    proxy = SlowProxy(rt.free_port(), reg.port, 2 << 20)
    try:
        reg.start()
        host = f"127.0.0.1:{reg.port}"
        rnd = random.Random("kill")
        files = [(f"usr/lib/f{i}", rnd.randbytes(rnd.randint(150000, 250000)))
                 for i in range(40)]
        layout = os.path.join(work, "zstd")
        rt.make_layout(layout, "v1", [files], compress=False)
        rt.skopeo_push(f"oci:{layout}:v1", f"docker://{host}/test/zstd:v1",
                       "--dest-compress-format", "zstd:chunked")
        kill_mid_pull(cfs, reg, proxy, "test/zstd:v1", "zstd:chunked")
        if gen:
            layout = os.path.join(work, "estargz")
            # 32 KiB chunks, as this test was written: most of each file is in chunks before
            # its last, reused whatever the writer did with the tail (docs/CHUNKED.md).
            et.make_estargz_layout(gen, layout, "v1", [files], chunk_size=32 << 10)
            rt.skopeo_push(f"oci:{layout}:v1", f"docker://{host}/test/estargz:v1")
            kill_mid_pull(cfs, reg, proxy, "test/estargz:v1", "eStargz")
        else:
            print("SKIP (eStargz half): " + missing)
    finally:
        reg.kill()
        proxy.close()
    return rt.result(work)


if __name__ == "__main__":
    sys.exit(main())
