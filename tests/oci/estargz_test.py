#!/usr/bin/env python3
"""Partial pulls of eStargz layers against a real registry (Debian's docker-registry on
127.0.0.1, as in registry_test.py). The layers are written by stargz-snapshotter's estargz
package (tests/oci/estargz-gen, built here with Debian's golang packages, GOPATH mode,
offline), put into an OCI layout with the toc.digest and uncompressed-size annotations and
pushed with skopeo, which keeps blobs and annotations as they are; no cfs code involved.

eStargz keeps the tar padding and the headers that follow a file in the gzip member of the
file's last chunk; a pull rebuilds that member from the file's object and the tail an
earlier pull recorded (oci/estargz-tails), proven by the member's gzip trailer, else fetches
it (docs/CHUNKED.md). The layers here are built with the library's default chunk size
(4 MiB), as real writers make them, so every file is one chunk, its last.

Checks: pull v1, then v2 sharing most files: v2 fetches at most 15% of its compressed size
and gets the image id of a full (--no-partial) pull and of a partial pull into a fresh
repository; the layer streams equal a full pull's; with every recorded tail tampered, v2
still pulls to the same image id, fetching those members instead; a legacy (47-byte)
stargz footer is read as well; tampered file content, a member forged with other content,
tampered TOC and a wrong toc.digest annotation are refused with nothing tagged and
fsck/oci fsck clean. gc keeps the tails of indexed files, removes the others (and all once
nothing is tagged), --dry-run counts them; oci fsck reports malformed tail entries.
oci pull --lazy (when FUSE is there): v2 served before its contents are fetched, the last
file read on demand, every path through the mount equal to the image's tars (the TOC entry
and landmark included), the final pull rebuilding the members from the tails the lazy fetch
kept, with a --no-partial pull's image id; a tampered chunk gives EIO naming the file and
nothing tagged; files of several chunks in an image mixing a zstd:chunked layer with an
eStargz one; a plain gzip layer refused with the reason.
Exit 77 (skip) when docker-registry, skopeo, go or the estargz package is missing.
"""
import argparse
import errno
import hashlib
import io
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
GOPATH = "/usr/share/gocode"
ESTARGZ_PKG = os.path.join(GOPATH, "src/github.com/containerd/stargz-snapshotter/estargz")
TOC_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest"
SIZE_ANNOTATION = "io.containers.estargz.uncompressed-size"


def build_generator(gen_dir):
    """Builds estargz-gen into gen_dir (its Go cache stays there too); returns its path."""
    gen_dir = os.path.abspath(gen_dir)
    os.makedirs(gen_dir, exist_ok=True)
    exe = os.path.join(gen_dir, "estargz-gen")
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="",
               GOCACHE=os.path.join(gen_dir, "go-cache"), CGO_ENABLED="0")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "estargz-gen")
    subprocess.run(["go", "build", "-o", exe, "."], cwd=src, env=env, check=True)
    return exe


def write_blob(layout, data):
    return rt.write_blob(layout, data)


def legacy_footer(data):
    """The blob with its 51-byte eStargz footer replaced by the 47-byte footer of legacy
    stargz (the offset directly in the gzip extra field); the footer decompresses to nothing
    either way, so the diff_id stays."""
    import zlib
    extra = data[-51 + 16:-51 + 38]  # "%016xSTARGZ"
    assert extra.endswith(b"STARGZ")
    footer = (bytes([0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255]) + len(extra).to_bytes(2, "little")
              + extra + b"\x01\x00\x00\xff\xff" + zlib.crc32(b"").to_bytes(4, "little")
              + bytes(4))
    assert len(footer) == 47
    return data[:-51] + footer


def make_estargz_layout(gen, out, tag, layers, toc_override=None, legacy=False, chunk_size=0):
    """An OCI layout whose layers (lists of (path, bytes)) are eStargz blobs made by gen
    (legacy: with legacy stargz footers; chunk_size 0: the library's default)."""
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    descs, diff_ids = [], []
    for n, files in enumerate(layers):
        tar_path = os.path.join(out, f"layer{n}.tar")
        blob_path = os.path.join(out, f"layer{n}.esgz")
        with open(tar_path, "wb") as f:
            f.write(rt.tar_of(files))
        info = json.loads(subprocess.run([gen, "-chunk-size", str(chunk_size), tar_path,
                                          blob_path], check=True, capture_output=True).stdout)
        with open(blob_path, "rb") as f:
            data = f.read()
        os.unlink(tar_path)
        os.unlink(blob_path)
        if legacy:
            data = legacy_footer(data)
        digest = write_blob(out, data)
        assert legacy or digest == info["digest"]
        toc = toc_override or info["toc_digest"]
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": digest, "size": len(data),
                      "annotations": {TOC_ANNOTATION: toc,
                                      SIZE_ANNOTATION: str(info["uncompressed_size"])}})
        diff_ids.append(info["diff_id"])
    config = json.dumps({"architecture": rt.host_arch(), "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": write_blob(out, config), "size": len(config)},
                           "layers": descs}).encode()
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": write_blob(out, manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    return descs


def blob_path(reg, digest):
    hexd = digest.split(":", 1)[1]
    return os.path.join(reg.dir, "storage", "docker", "registry", "v2", "blobs", "sha256",
                        hexd[:2], hexd, "data")


def toc_of(path):
    """(TOC member offset, TOC JSON) of an eStargz blob, read with Python's gzip/tarfile."""
    import gzip
    with open(path, "rb") as f:
        data = f.read()
    footer = data[-51:]
    off = int(footer[16:32], 16)
    tar = tarfile.open(fileobj=io.BytesIO(gzip.decompress(data[off:-51])))
    return off, json.load(tar.extractfile("stargz.index.json"))


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def forge_member(path, begin, end, size):
    """Replaces the gzip member [begin, end) with a well-formed member of other content of
    size bytes and the same length (padded in the gzip extra field): it decompresses, but
    not to what the TOC's chunkDigest says. Returns the bytes it replaced."""
    import zlib
    rnd = random.Random("forged")
    content = rnd.randbytes(size)
    c = zlib.compressobj(0, zlib.DEFLATED, -15)
    body = c.compress(content) + c.flush()
    xlen = (end - begin) - 10 - 2 - len(body) - 8
    assert 0 <= xlen < 65536, "member too small to forge"
    member = (bytes([0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255]) + xlen.to_bytes(2, "little")
              + bytes(xlen) + body + zlib.crc32(content).to_bytes(4, "little")
              + (size & 0xffffffff).to_bytes(4, "little"))
    with open(path, "r+b") as f:
        f.seek(begin)
        old = f.read(end - begin)
        f.seek(begin)
        f.write(member)
    return old


def restore(path, begin, data):
    with open(path, "r+b") as f:
        f.seek(begin)
        f.write(data)


def manifest_of(host, name):
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{host}/{name}"], check=True, capture_output=True).stdout
    return json.loads(out)


def fetched_of(r):
    partial = rt.field(r.stdout, "partial") or ""
    return int(partial.split(" bytes fetched")[0].split(", ")[-1]) if partial else -1


def missing_tools():
    for tool in ("docker-registry", "skopeo", "go"):
        if not shutil.which(tool):
            return f"{tool} is not installed (tools/setup-deps.sh)"
    if not os.path.isdir(ESTARGZ_PKG):
        return "golang-github-containerd-stargz-snapshotter-dev is not installed"
    return None


def refused(cfs, host, ref, expect, what):
    bad_repo = cfs.repo()
    r = cfs.pull(bad_repo, f"docker://{host}/{ref}")
    err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    print("     error: " + err)
    check(r.returncode != 0 and any(e in err for e in expect), f"{what}: refused")
    images = cfs.run(bad_repo, "oci", "images")
    check(images.returncode == 0 and "pulled" not in images.stdout, f"{what}: nothing tagged")
    check(cfs.run(bad_repo, "fsck").returncode == 0
          and cfs.run(bad_repo, "oci", "fsck").returncode == 0,
          f"{what}: fsck and oci fsck pass")


def image_files(reg, layers):
    """{path: bytes or None (directories)} of an image whose layers add files only (no
    whiteouts), read from the registry's blobs with Python's gzip and tarfile: what a full
    pull's image holds (the eStargz TOC entry and landmark file included)."""
    files = {}
    for layer in layers:
        with tarfile.open(blob_path(reg, layer["digest"]), "r:gz") as tar:
            for m in tar.getmembers():
                name = (m.name[2:] if m.name.startswith("./") else m.name).strip("/")
                parts = name.split("/")
                for i in range(1, len(parts)):
                    files.setdefault("/".join(parts[:i]), None)
                files[name] = tar.extractfile(m).read() if m.isreg() else None
    return files


def mount_files(mnt):
    """{path: bytes or None (directories)} of everything under mnt."""
    files = {}
    for root, dirs, names in os.walk(mnt):
        rel = os.path.relpath(root, mnt)
        for d in dirs:
            files[os.path.normpath(os.path.join(rel, d))] = None
        for n in names:
            with open(os.path.join(root, n), "rb") as f:
                files[os.path.normpath(os.path.join(rel, n))] = f.read()
    return files


def lazy_checks(cfsctl, gen, cfs, reg, host, work, m2, full_image):
    """oci pull --lazy of the eStargz image v2 (docs/CHUNKED.md "Lazy pulls")."""
    import lazy_test as lt
    source = f"docker://{host}/test/estargz:v2"
    expected = image_files(reg, m2["layers"])
    check("stargz.index.json" in expected and ".no.prefetch.landmark" in expected,
          f"lazy: the image's tars hold the TOC entry and the landmark ({len(expected)} paths)")
    total = sum(l["size"] for l in m2["layers"])
    top = m2["layers"][-1]
    _, toc = toc_of(blob_path(reg, top["digest"]))
    offsets = sorted({e["offset"] for e in toc["entries"] if e.get("offset")})
    last = [e for e in toc["entries"] if e.get("type") == "reg" and e.get("size", 0) > 10000][-1]
    last_name = last["name"].lstrip("./")
    pulls = []
    try:
        # The background fetch takes about 6 s at this rate: the last file is read long before.
        repo = cfs.repo()
        mnt = tempfile.mkdtemp(dir=work)
        lazy = lt.LazyPull(cfsctl, repo, source, mnt, "--lazy-rate-limit", str(total // 6))
        pulls.append(lazy)
        check(lazy.wait_for("serving ", 60) is not None, "lazy: the provisional image is served")
        with open(os.path.join(mnt, last_name), "rb") as f:
            check(f.read() == expected[last_name], f"lazy: {last_name} (last in TOC order) read")
        check(sorted(os.listdir(mnt)) == sorted(n for n in expected if "/" not in n),
              f"lazy: ls of the mount's root lists the image's ({sorted(os.listdir(mnt))})")
        check(lazy.wait_for("image ", 120) is not None
              and "wholly local" in (lazy.wait_for("image ", 30) or ""),
              "lazy: the pull ends with the image wholly local")
        got = mount_files(mnt)
        diff = sorted(n for n in set(got) | set(expected) if got.get(n, 0) != expected.get(n, 0))
        check(not diff, f"lazy: all {len(expected)} paths through the mount equal the image's "
              f"({diff[:3]})")
        rc, out, err, counts = lt.finish_pull(lazy, pulls)
        print("     lazy, final pull: " + (rt.field(out, "partial") or ""))
        check(rc == 0 and counts["on demand"] >= 1,
              "lazy: exit 0; the file read first was fetched on demand")
        check("eStargz tails rebuilt" in out,
              "lazy: the final pull rebuilds last-chunk members from the tails the lazy fetch kept")
        check(rt.field(out, "image") == full_image,
              f"lazy: the image id of a --no-partial pull ({full_image})")
        check(cfs.run(repo, "fsck").returncode == 0 and cfs.run(repo, "oci", "fsck").returncode == 0,
              "lazy: fsck and oci fsck pass")

        # A tampered chunk: EIO on demand naming the file, nothing tagged, fsck clean.
        blob = blob_path(reg, top["digest"])
        where = (last["offset"] + next(o for o in offsets if o > last["offset"])) // 2
        flip(blob, where)
        try:
            bad_repo = cfs.repo()
            mnt2 = tempfile.mkdtemp(dir=work)
            lazy = lt.LazyPull(cfsctl, bad_repo, source, mnt2, "--lazy-rate-limit",
                               str(total // 6))
            pulls.append(lazy)
            check(lazy.wait_for("serving ", 60) is not None, "lazy, tampered: served")
            code = lt.read_errno(os.path.join(mnt2, last_name))
            check(code == errno.EIO, f"lazy, tampered: reading {last_name} gives EIO ({code})")
            lt.check_refused(cfs, lazy, pulls, bad_repo, last_name, "lazy, tampered")
        finally:
            flip(blob, where)

        # Files of several chunks (64 KiB chunks), read through the mount as soon as it is
        # served (most on demand), in an image with a zstd:chunked layer under the eStargz one.
        rnd = random.Random("chunks")
        chunky = [(f"opt/c{i}", rnd.randbytes(rnd.randint(100000, 300000))) for i in range(6)]
        # Over 1 MiB: served chunk by chunk (each read fetches the chunks it covers).
        chunky.append(("opt/big", rnd.randbytes(1536 * 1024 + 123)))
        lower = [("etc/os-release", b"ID=mixed\n")] + [
            (f"opt/z{i}", rnd.randbytes(20000)) for i in range(4)]
        zl = os.path.join(work, "zlayer")
        # skopeo's zstd:chunked conversion drops zero records after the end-of-archive blocks
        # (chunked_test.py): a tar without them.
        record_size, tarfile.RECORDSIZE = tarfile.RECORDSIZE, tarfile.BLOCKSIZE
        try:
            rt.make_layout(zl, "z", [lower], compress=False)
            lower_diff_id = "sha256:" + hashlib.sha256(rt.tar_of(lower)).hexdigest()
        finally:
            tarfile.RECORDSIZE = record_size
        rt.skopeo_push(f"oci:{zl}:z", f"docker://{host}/test/zlayer:v1",
                       "--dest-compress-format", "zstd:chunked")
        zdesc = manifest_of(host, "test/zlayer:v1")["layers"][0]
        mixed = os.path.join(work, "mixed")
        make_estargz_layout(gen, mixed, "mixed", [chunky], chunk_size=65536)
        # The zstd:chunked layer goes under the eStargz one: its blob, descriptor and diff_id.
        with open(blob_path(reg, zdesc["digest"]), "rb") as f:
            write_blob(mixed, f.read())
        with open(os.path.join(mixed, "index.json")) as f:
            index = json.load(f)
        mpath = os.path.join(mixed, "blobs", "sha256", index["manifests"][0]["digest"][7:])
        with open(mpath) as f:
            manifest = json.load(f)
        with open(os.path.join(mixed, "blobs", "sha256", manifest["config"]["digest"][7:])) as f:
            config = json.load(f)
        config["rootfs"]["diff_ids"].insert(0, lower_diff_id)
        cbytes = json.dumps(config).encode()
        manifest["config"].update(digest=write_blob(mixed, cbytes), size=len(cbytes))
        manifest["layers"].insert(0, zdesc)
        mbytes = json.dumps(manifest).encode()
        index["manifests"][0].update(digest=write_blob(mixed, mbytes), size=len(mbytes))
        with open(os.path.join(mixed, "index.json"), "w") as f:
            json.dump(index, f)
        rt.skopeo_push(f"oci:{mixed}:mixed", f"docker://{host}/test/mixed:v1")
        msrc = f"docker://{host}/test/mixed:v1"
        _, mtoc = toc_of(blob_path(reg, manifest["layers"][1]["digest"]))
        check(sum(e.get("type") == "chunk" for e in mtoc["entries"]) >= 6,
              "lazy, chunks: the eStargz layer has files of several chunks")
        mfull = cfs.pull(cfs.repo(), msrc, "--no-partial")
        check(mfull.returncode == 0, "mixed zstd:chunked and eStargz image: --no-partial pull")
        mrepo = cfs.repo()
        mnt4 = tempfile.mkdtemp(dir=work)
        mtotal = sum(l["size"] for l in manifest["layers"])
        lazy = lt.LazyPull(cfsctl, mrepo, msrc, mnt4, "--lazy-rate-limit", str(mtotal // 4))
        pulls.append(lazy)
        check(lazy.wait_for("serving ", 60) is not None, "lazy, chunks: served")
        # Its last 4 KiB first (the background reaches them last): the last chunk's gzip
        # member also holds the tar padding and headers after the file.
        big = dict(chunky)["opt/big"]
        with open(os.path.join(mnt4, "opt", "big"), "rb") as f:
            f.seek(len(big) - 4096)
            check(f.read() == big[-4096:], "lazy, chunks: the end of a file over 1 MiB reads right")
        got = mount_files(mnt4)
        want = dict(lower + chunky)
        check(all(got.get(n) == c for n, c in want.items()),
              "lazy, chunks: every file through the mount equals the image's")
        lazy.wait_for("image ", 120)
        rc, out, err, counts = lt.finish_pull(lazy, pulls, "lazy, chunks")
        check(counts["chunks for reads"] > 0,
              "lazy, chunks: the file over 1 MiB was served chunk by chunk")
        check(rc == 0 and rt.field(out, "image") == rt.field(mfull.stdout, "image")
              and rt.field(out, "image"),
              "lazy, chunks: the image id of a --no-partial pull")
        check(cfs.run(mrepo, "fsck").returncode == 0
              and cfs.run(mrepo, "oci", "fsck").returncode == 0, "lazy, chunks: fsck clean")

        # A plain gzip layer (no TOC) is refused, saying why.
        plain = os.path.join(work, "plain")
        rt.make_layout(plain, "plain", [[("etc/os-release", b"ID=plain\n")]])
        rt.skopeo_push(f"oci:{plain}:plain", f"docker://{host}/test/plain:v1")
        mnt3 = tempfile.mkdtemp(dir=work)
        r = subprocess.run([cfsctl, "--repo", cfs.repo(), "oci", "pull",
                            f"docker://{host}/test/plain:v1", "lazy", "--lazy", "--mount", mnt3],
                           capture_output=True, text=True, timeout=120)
        print("     plain gzip: " + r.stderr.strip()[-160:])
        check(r.returncode != 0 and "neither a zstd:chunked nor an eStargz layer" in r.stderr,
              "lazy: a plain gzip layer is refused with the reason")
    finally:
        for p in pulls:
            print(p.stop()[2], file=sys.stderr)


def tail_files(repo):
    """{chunk hex: [tail file names]} of a repository's eStargz tail cache."""
    top = os.path.join(repo, "oci", "estargz-tails")
    return {d: sorted(os.listdir(os.path.join(top, d))) for d in os.listdir(top)} \
        if os.path.isdir(top) else {}


def gc_count(out, what):
    """N of gc's line "<what>: N removed" / "N would be removed"."""
    line = next((l for l in out.splitlines() if l.startswith(what + ": ")), "")
    return int(line.split(": ")[1].split()[0]) if line else -1


def tail_cache_checks(cfs, repo):
    """gc and oci fsck know the tail cache (docs/CHUNKED.md "The tail cache and gc")."""
    index = set(os.listdir(os.path.join(repo, "oci", "content-sha256")))
    before = tail_files(repo)
    fsck = cfs.run(repo, "oci", "fsck")
    n = sum(len(v) for v in before.values())
    check(fsck.returncode == 0 and f"estargz tails: {n}" in fsck.stdout,
          f"oci fsck counts the {n} recorded tails")
    # Images kept: the tails of files the content index maps to objects stay; those of
    # small files (inline in the image, never rebuilt from an object) go.
    useless = sum(len(v) for d, v in before.items() if d not in index)
    dry = cfs.run(repo, "gc", "--dry-run")
    check(dry.returncode == 0 and gc_count(dry.stdout, "eStargz tails") == useless
          and tail_files(repo) == before,
          f"gc --dry-run counts the {useless} tails no indexed file uses and removes nothing")
    gc = cfs.run(repo, "gc")
    after = tail_files(repo)
    check(gc.returncode == 0 and gc_count(gc.stdout, "eStargz tails") == useless
          and after == {d: v for d, v in before.items() if d in index} and len(after) >= 20,
          f"gc keeps the {sum(len(v) for v in after.values())} tails of indexed files and "
          "removes the others")
    # Nothing tagged: the objects go, and with them their index entries and tails.
    for tag in [l.split()[0] for l in cfs.run(repo, "oci", "images").stdout.splitlines()[1:]]:
        cfs.run(repo, "oci", "untag", tag)
    kept = sum(len(v) for v in after.values())
    dry = cfs.run(repo, "gc", "--dry-run")
    check(gc_count(dry.stdout, "eStargz tails") == kept
          and gc_count(dry.stdout, "Content index entries") >= len(after)
          and tail_files(repo) == after, f"untagged: gc --dry-run counts all {kept} tails")
    gc = cfs.run(repo, "gc")
    check(gc.returncode == 0 and tail_files(repo) == {}
          and os.listdir(os.path.join(repo, "oci", "content-sha256")) == []
          and cfs.run(repo, "fsck").returncode == 0
          and cfs.run(repo, "oci", "fsck").returncode == 0,
          "untagged: gc removes every tail and index entry; fsck and oci fsck pass")
    # Malformed entries: oci fsck reports each (as it does content index entries); gc leaves
    # them alone.
    top = os.path.join(repo, "oci", "estargz-tails")
    hexd = "ab" * 32
    os.makedirs(os.path.join(top, "not-a-digest"))
    with open(os.path.join(top, "cd" * 32), "wb") as f:
        f.write(b"a file where a directory belongs")
    os.makedirs(os.path.join(top, hexd))
    with open(os.path.join(top, hexd, "nonsense"), "wb") as f:
        f.write(b"x")
    with open(os.path.join(top, hexd, "0badc0de-100000"), "wb") as f:
        f.write(bytes(70000))
    bad = cfs.run(repo, "oci", "fsck")
    print("     " + "\n     ".join(l for l in bad.stdout.splitlines() if "estargz-tail" in l))
    check(bad.returncode != 0 and bad.stdout.count("estargz-tail-invalid") == 4
          and "not-a-digest" in bad.stdout and "nonsense" in bad.stdout
          and "more than the 65536" in bad.stdout and "not a directory" in bad.stdout,
          "oci fsck reports a bad directory name, a file for a directory, a bad file name and "
          "an oversize tail")
    gc = cfs.run(repo, "gc")
    check(gc.returncode == 0 and os.listdir(os.path.join(top, hexd)) == ["nonsense"]
          and os.path.isdir(os.path.join(top, "not-a-digest"))
          and os.path.isfile(os.path.join(top, "cd" * 32)),
          "gc removes the well-named tail of an unused chunk, leaves malformed names to fsck")
    shutil.rmtree(top)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cfsctl", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--gen-dir", required=True)
    args = ap.parse_args()
    missing = missing_tools()
    if missing:
        print("SKIP: " + missing)
        return 77
    gen = build_generator(args.gen_dir)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    work = tempfile.mkdtemp(dir=args.work)
    cfs = rt.Cfs(args.cfsctl, work)
    reg = rt.Registry(work, rt.free_port())
    try:
        reg.start()
        host = f"127.0.0.1:{reg.port}"
        rnd = random.Random("estargz")
        base = [("etc/os-release", b"ID=sample\n"), ("usr/bin/hello", b"#!/bin/sh\n")]
        shared = [(f"usr/lib/f{i}", rnd.randbytes(rnd.randint(200000, 500000)))
                  for i in range(24)]
        small = [(f"usr/share/s{i}", rnd.randbytes(rnd.randint(1, 300))) for i in range(40)]
        v2_files = shared[:23] + [("usr/lib/f23", rnd.randbytes(100000))]
        v2_files += [("usr/lib/new", rnd.randbytes(30000))] + small
        for name, files in (("v1", shared + small), ("v2", v2_files)):
            layout = os.path.join(work, name)
            make_estargz_layout(gen, layout, name, [base, files])
            rt.skopeo_push(f"oci:{layout}:{name}", f"docker://{host}/test/estargz:{name}")
        m2 = manifest_of(host, "test/estargz:v2")
        local = json.load(open(os.path.join(work, "v2", "index.json")))["manifests"][0]
        with open(os.path.join(work, "v2", "blobs", "sha256",
                               local["digest"].split(":")[1]), "rb") as f:
            local_manifest = json.load(f)
        check(m2["layers"] == local_manifest["layers"],
              "skopeo kept the eStargz blobs and their annotations as they are")
        repo, full_repo, fetched, full = rt.v2_after_v1(
            cfs, host, "test/estargz", m2["layers"],
            lambda r2: ("eStargz tails rebuilt" in r2.stdout,
                        "last-chunk members rebuilt from recorded tails"))
        # Every recorded tail tampered: the trailer check refuses each, the members are
        # fetched, the image is the same.
        trepo = cfs.repo()
        check(cfs.pull(trepo, f"docker://{host}/test/estargz:v1").returncode == 0,
              "v1 into another repository")
        tails_dir = os.path.join(trepo, "oci", "estargz-tails")
        tampered = 0
        for root, _, names in os.walk(tails_dir):
            for n in names:
                p = os.path.join(root, n)
                if os.path.getsize(p) > 0:
                    flip(p, os.path.getsize(p) // 2)
                    tampered += 1
        check(tampered >= 20, f"v1 recorded the tails of its files ({tampered})")
        tr = cfs.pull(trepo, f"docker://{host}/test/estargz:v2")
        print("     v2, tails tampered: " + (rt.field(tr.stdout, "partial") or ""))
        refused_tails = (rt.field(tr.stdout, "partial") or "").split(" refused")[0].split(", ")[-1]
        check(tr.returncode == 0 and rt.field(tr.stdout, "image") == rt.field(full.stdout, "image")
              and fetched_of(tr) > 4 * fetched and refused_tails.isdigit()
              and int(refused_tails) >= 20,
              "tampered tails: v2 fetches the members instead and gets the full pull's image id")
        check(cfs.run(trepo, "fsck").returncode == 0
              and cfs.run(trepo, "oci", "fsck").returncode == 0,
              "tampered tails: fsck and oci fsck pass")

        tail_cache_checks(cfs, repo)

        if shutil.which("fusermount3") and os.path.exists("/dev/fuse"):
            lazy_checks(args.cfsctl, gen, cfs, reg, host, work, m2, rt.field(full.stdout, "image"))
        else:
            print("SKIP (lazy part): no FUSE (fusermount3, /dev/fuse)")

        # Legacy stargz footers (47 bytes) locate the TOC as well.
        legacy = os.path.join(work, "legacy")
        make_estargz_layout(gen, legacy, "legacy", [base, v2_files], legacy=True)
        rt.skopeo_push(f"oci:{legacy}:legacy", f"docker://{host}/test/estargz:legacy")
        lrepo = cfs.repo()
        lr = cfs.pull(lrepo, f"docker://{host}/test/estargz:legacy")
        check(lr.returncode == 0 and rt.field(lr.stdout, "partial") is not None
              and rt.field(lr.stdout, "image") == rt.field(full.stdout, "image"),
              "legacy stargz footer: partial pull gives v2's image id")

        # Tampering: a file content inside the blob, the TOC, the toc.digest annotation.
        layer = max(m2["layers"], key=lambda l: l["size"])
        data = blob_path(reg, layer["digest"])
        toc_off, toc = toc_of(data)
        offsets = sorted({e["offset"] for e in toc["entries"] if e.get("offset")})
        victim = next(e for e in toc["entries"] if e.get("type") == "reg" and e.get("size", 0) > 10000)
        nxt = next(o for o in offsets if o > victim["offset"])
        for what, offset, expect in (
                ("file content", (victim["offset"] + nxt) // 2, ["tampered"]),
                ("TOC", toc_off + (os.path.getsize(data) - 51 - toc_off) // 2,
                 ["tampered", "toc.digest"])):
            flip(data, offset)
            try:
                refused(cfs, host, "test/estargz:v2", expect, f"tampered {what}")
            finally:
                flip(data, offset)
        # A chunk's member replaced by a valid gzip member of other bytes (as many as the
        # chunk has): only the chunkDigest check can tell.
        first = next(e for e in toc["entries"]
                     if e.get("type") == "reg" and e.get("size", 0) > 10000)
        end = next(o for o in offsets if o > first["offset"])
        old = forge_member(data, first["offset"], end, first["size"])
        try:
            refused(cfs, host, "test/estargz:v2", ["TOC says " + first["chunkDigest"]],
                    "a chunk replaced by a well-formed gzip member")
        finally:
            restore(data, first["offset"], old)
        wrong = os.path.join(work, "wrong")
        make_estargz_layout(gen, wrong, "wrong", [base, v2_files],
                            toc_override="sha256:" + hashlib.sha256(b"another").hexdigest())
        rt.skopeo_push(f"oci:{wrong}:wrong", f"docker://{host}/test/estargz:wrong")
        refused(cfs, host, "test/estargz:wrong", ["toc.digest annotation says"],
                "wrong toc.digest annotation")
    finally:
        reg.kill()
    return rt.result(work)


if __name__ == "__main__":
    sys.exit(main())
