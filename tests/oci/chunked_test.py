#!/usr/bin/env python3
"""Partial pulls of zstd:chunked layers against a real registry (Debian's docker-registry on
127.0.0.1, as in registry_test.py); the images are written with Python's tarfile and turned
into zstd:chunked by skopeo (`--dest-compress-format zstd:chunked`), no cfs code involved.

skopeo 1.9 (bookworm) drops the zero records a tar carries after its end-of-archive blocks,
so its zstd:chunked layers of such tars no longer match their diff_ids (any verifying client
refuses them); the layers here end right after the end-of-archive blocks, which it keeps.

Checks: pull v1, then v2 sharing most files: v2 fetches at most 15% of its compressed size
and gets the image id of a full (--no-partial) pull of v2 into a fresh repository (and of a
partial pull into a fresh one); a tampered file content and a tampered TOC are refused with
nothing tagged and fsck/oci fsck clean; oci fsck names a content index entry whose object
does not hash to its name.
Exit 77 (skip) when docker-registry or skopeo is missing.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import registry_test as rt  # noqa: E402

check = rt.check


def blob_path(reg, digest):
    hexd = digest.split(":", 1)[1]
    return os.path.join(reg.dir, "storage", "docker", "registry", "v2", "blobs", "sha256",
                        hexd[:2], hexd, "data")


def manifest_of(host, name):
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{host}/{name}"], check=True, capture_output=True).stdout
    return json.loads(out)


def toc_of(path, layer):
    ann = layer["annotations"]
    pos = (ann.get("io.github.containers.zstd-chunked.manifest-position")
           or ann["io.containers.zstd-chunked.manifest-position"])
    off, length = (int(x) for x in pos.split(":")[:2])
    with open(path, "rb") as f:
        f.seek(off)
        raw = f.read(length)
    toc = subprocess.run(["zstd", "-dc"], input=raw, capture_output=True, check=True).stdout
    return off, length, json.loads(toc)


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cfsctl", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    for tool in ("docker-registry", "skopeo", "zstd"):
        if not shutil.which(tool):
            print(f"SKIP: {tool} is not installed (tools/setup-deps.sh)")
            return 77
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    work = tempfile.mkdtemp(dir=args.work)
    cfs = rt.Cfs(args.cfsctl, work)
    reg = rt.Registry(work, rt.free_port())
    tarfile.RECORDSIZE = tarfile.BLOCKSIZE  # no zero records after the end-of-archive blocks
    try:
        reg.start()
        host = f"127.0.0.1:{reg.port}"
        rnd = random.Random("chunked")
        base = [("etc/os-release", b"ID=sample\n"), ("usr/bin/hello", b"#!/bin/sh\n")]
        shared = [(f"usr/lib/f{i}", rnd.randbytes(rnd.randint(20000, 200000)))
                  for i in range(60)]
        small = [(f"usr/share/s{i}", rnd.randbytes(rnd.randint(1, 300))) for i in range(40)]
        v2_files = shared[:55] + [(f"usr/lib/f{i}", rnd.randbytes(50000)) for i in range(55, 58)]
        v2_files += [("usr/lib/new", rnd.randbytes(30000))] + small
        for name, files in (("v1", shared + small), ("v2", v2_files)):
            layout = os.path.join(work, name)
            rt.make_layout(layout, name, [base, files], compress=False)
            rt.skopeo_push(f"oci:{layout}:{name}", f"docker://{host}/test/chunked:{name}",
                           "--dest-compress-format", "zstd:chunked")
        m2 = manifest_of(host, "test/chunked:v2")
        big_layer = max(m2["layers"], key=lambda l: l["size"])
        check(any(k.endswith("zstd-chunked.manifest-checksum")
                  for k in big_layer.get("annotations", {})),
              "skopeo pushed zstd:chunked layers (TOC annotations present)")
        repo, full_repo, _, full = rt.v2_after_v1(cfs, host, "test/chunked", m2["layers"])

        # Tampering: a file content inside the blob, then the TOC.
        layer = max(m2["layers"], key=lambda l: l["size"])
        data = blob_path(reg, layer["digest"])
        toc_off, toc_len, toc = toc_of(data, layer)
        victim = next(e for e in toc["entries"] if e.get("type") == "reg" and e.get("size", 0) > 10000)
        where = (victim["offset"] + victim["endOffset"]) // 2
        for what, offset in (("file content", where), ("TOC", toc_off + toc_len // 2)):
            flip(data, offset)
            try:
                bad_repo = cfs.repo()
                r = cfs.pull(bad_repo, f"docker://{host}/test/chunked:v2")
                err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
                print("     error: " + err)
                expect = "TOC says" if what == "file content" else "manifest-checksum"
                check(r.returncode != 0 and (expect in err or "tampered" in err),
                      f"tampered {what}: refused")
                images = cfs.run(bad_repo, "oci", "images")
                check(images.returncode == 0 and "pulled" not in images.stdout,
                      f"tampered {what}: nothing tagged")
                check(cfs.run(bad_repo, "fsck").returncode == 0
                      and cfs.run(bad_repo, "oci", "fsck").returncode == 0,
                      f"tampered {what}: fsck and oci fsck pass")
            finally:
                flip(data, offset)

        # A reused object that no longer holds what the content index says: refused by the
        # per-file TOC digest check before anything is named.
        obj_repo = cfs.repo()
        check(cfs.pull(obj_repo, f"docker://{host}/test/chunked:v1").returncode == 0,
              "v1 pulled again")
        idx = os.path.join(obj_repo, "oci", "content-sha256")
        shared_digest = next(e["digest"] for e in toc["entries"]
                             if e.get("name", "").endswith("usr/lib/f0"))
        obj = os.path.join(idx, os.readlink(os.path.join(idx, shared_digest.split(":")[1])))
        flip(obj, 100)
        r = cfs.run(obj_repo, "oci", "pull", f"docker://{host}/test/chunked:v2", "v2")
        err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        print("     error: " + err)
        check(r.returncode != 0 and "TOC says " + shared_digest in err,
              "a reused object that does not match its TOC digest is refused")
        images = cfs.run(obj_repo, "oci", "images")
        check("v2" not in images.stdout, "corrupt reused object: v2 not tagged")
        bad = cfs.run(obj_repo, "oci", "fsck")
        check(bad.returncode != 0 and "content-index-mismatch" in bad.stdout,
              "oci fsck names the corrupt object's content index entry")

        # oci fsck re-hashes the content index.
        idx = os.path.join(repo, "oci", "content-sha256")
        names = sorted(os.listdir(idx))
        a, b = names[0], names[1]
        ta = os.readlink(os.path.join(idx, a))
        os.unlink(os.path.join(idx, b))
        os.symlink(ta, os.path.join(idx, b))
        bad = cfs.run(repo, "oci", "fsck")
        check(bad.returncode != 0 and "content-index-mismatch" in bad.stdout and b in bad.stdout,
              "oci fsck names a content index entry whose object hashes otherwise")
    finally:
        reg.kill()
    return rt.result(work)


if __name__ == "__main__":
    sys.exit(main())
