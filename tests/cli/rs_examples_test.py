#!/usr/bin/env python3
"""composefs-rs' example build scripts, their cfsctl lines run unchanged against cfsctl.

The lines are taken at test time from composefs-rs' source tarball (examples/*/build; nothing of
it is kept in this tree): every line that runs ${CFSCTL}, with the variable assignments before it.
The scripts build their images with podman and pull them from containers-storage; here the
image is a local OCI layout (a bootable tree with a kernel and initramfs, made below) and the
source argument "containers-storage:<id>" is the one substitution: it becomes "oci:<layout>",
and the podman image ids the scripts read from --iidfile files are the layout's manifest
digest. Everything else (the ${CFSCTL} definition, ./cfsctl = the cfsctl under test, the options)
is as written. Each line is reported as run (and must succeed) or not run, with the reason;
a failing line is named by script and line number.

Exit status: 0 all runnable lines passed, 1 a line failed, 77 the tarball is not there.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

KVER = "6.1.0-cfs-test"


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest, len(data)


def make_layout(layout):
    """A bootable image: /usr/lib/modules/KVER/{vmlinuz,initramfs.img}, /etc, /boot, /sysroot."""
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, data=None, mode=0o644, kind=tarfile.REGTYPE):
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            info.mode = mode
            info.type = kind
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        for d in ["usr", "usr/lib", "usr/lib/modules", "usr/lib/modules/" + KVER, "etc", "boot",
                  "sysroot", "usr/bin"]:
            add(d, mode=0o755, kind=tarfile.DIRTYPE)
        add("usr/lib/modules/%s/vmlinuz" % KVER, b"MZ kernel " * 5000)
        add("usr/lib/modules/%s/initramfs.img" % KVER, b"initramfs " * 3000)
        add("etc/os-release", b"ID=cfs-test\nVERSION_ID=1\n")
        add("usr/bin/tool", bytes(range(256)) * 40, mode=0o755)
    layer = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    layer_digest, layer_size = blob(layout, gzip.compress(layer, mtime=0))
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                         "config": {}}).encode()
    config_digest, config_size = blob(layout, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer_size}]}).encode()
    manifest_digest, manifest_size = blob(layout, manifest)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
    return manifest_digest


def logical_lines(text):
    """(first line number, text) with backslash continuations joined."""
    out, buf, start = [], "", None
    for no, line in enumerate(text.splitlines(), 1):
        if start is None:
            start = no
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append((start, buf + line))
        buf, start = "", None
    return out


CFSCTL_USE = re.compile(r"\$\{?CFSCTL\}?")
ASSIGN = re.compile(r"^\s*([A-Z_][A-Z0-9_]*)=(.*)$")
SOURCE = re.compile(r'"?containers-storage:"?\$\{([A-Z_]+)\}"?')


def extract(script):
    """The script's steps: ('assign', no, line) and ('cfsctl', no, line), in order."""
    steps = []
    depth = 0
    for no, line in logical_lines(script):
        s = line.strip()
        if re.match(r"^(if|case)\b", s):
            depth += 1
        if re.match(r"^(fi|esac)\b", s):
            depth -= 1
            continue
        m = ASSIGN.match(line)
        if m and m.group(1) == "CFSCTL":
            steps.append(("cfsctl-def" if depth == 0 else "cfsctl-cond", no, s))
        elif CFSCTL_USE.search(line):
            steps.append(("cfsctl", no, s))
        elif m and depth == 0:
            steps.append(("assign", no, s))
    return steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cfsctl", required=True)
    ap.add_argument("--tarball", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    if not os.path.exists(a.tarball):
        print("SKIP: composefs-rs source tarball %s not found" % a.tarball)
        return 77
    scripts = {}
    with tarfile.open(a.tarball) as tar:
        for m in tar.getmembers():
            parts = m.name.split("/")
            if len(parts) >= 3 and parts[-3] == "examples" and parts[-1] == "build" and m.isfile():
                scripts[parts[-2]] = tar.extractfile(m).read().decode()
    if not scripts:
        print("FAIL: no examples/*/build in %s" % a.tarball)
        return 1
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    layout = os.path.join(a.work, "layout")
    manifest_digest = make_layout(layout)
    failures, ran, not_run = 0, 0, 0
    for name in sorted(scripts):
        steps = extract(scripts[name])
        wd = os.path.join(a.work, name)
        os.makedirs(os.path.join(wd, "tmp"))
        os.symlink(os.path.abspath(a.cfsctl), os.path.join(wd, "cfsctl"))
        # What podman build --iidfile leaves for the script.
        for iid in ["base.iid", "final.iid", "iid"]:
            with open(os.path.join(wd, "tmp", iid), "w") as f:
                f.write(manifest_digest)
        prelude = []
        for kind, no, line in steps:
            where = "examples/%s/build:%d" % (name, no)
            if kind == "assign" or kind == "cfsctl-def":
                prelude.append(line)
                continue
            if kind == "cfsctl-cond":
                print("NOT RUN %s: %s (only when FS_VERITY_MODE=none)" % (where, line))
                not_run += 1
                continue
            command = SOURCE.sub("oci:" + layout, line)
            run = subprocess.run(["sh", "-ec", "\n".join(prelude + [command])], cwd=wd,
                                 capture_output=True, text=True)
            if (run.returncode != 0 and " init " in line and
                    "does not support fs-verity" in run.stderr):
                # No fs-verity on this kernel: the script's checks require it. Create the
                # repository insecure; the line, run again unchanged, must accept it.
                print("NOTE %s: no fs-verity here; repository created with --insecure" % where)
                subprocess.run(["sh", "-ec", "\n".join(prelude + [
                    line.replace(" init ", " init --insecure ", 1)])], cwd=wd, check=True,
                    capture_output=True)
                run = subprocess.run(["sh", "-ec", "\n".join(prelude + [command])], cwd=wd,
                                     capture_output=True, text=True)
            ran += 1
            if run.returncode != 0:
                failures += 1
                print("FAIL %s: %s\n  exit %d\n  stdout: %s\n  stderr: %s" % (
                    where, command, run.returncode, run.stdout.strip(), run.stderr.strip()))
            else:
                print("OK   %s: %s" % (where, line))
            if ASSIGN.match(line):
                prelude.append(command)
        # What the lines were for: a boot entry that boots the image's boot variant, whose id
        # is what oci compute-id --bootable computes from the layers.
        entries = os.path.join(wd, "tmp/efi/loader/entries")
        confs = sorted(os.listdir(entries)) if os.path.isdir(entries) else []
        repo = os.path.join(wd, "tmp/sysroot/composefs")
        if os.path.isdir(repo):
            # init --erofs-version 1 (and init's default) as composefs-rs writes it.
            meta = json.load(open(os.path.join(repo, "meta.json")))
            if (meta.get("erofs_formats") != {"default": 1} or
                    "v1_erofs" not in meta["features"]["read-only-compatible"]):
                failures += 1
                print("FAIL examples/%s/build: meta.json is not EROFS V1: %r" % (name, meta))
            want = subprocess.run([a.cfsctl, "--repo", repo, "oci", "compute-id", "--bootable",
                                   "@" + manifest_digest], capture_output=True,
                                  text=True).stdout.strip()
            text = open(os.path.join(entries, confs[0])).read() if confs else ""
            if not re.search(r"composefs\.digest=\??v1-sha256-12:%s\b" % re.escape(want or "-"),
                             text):
                failures += 1
                print("FAIL examples/%s/build: no boot entry for boot image %s in %s: %r" % (
                    name, want, entries, text))
    print("%d lines run, %d failed, %d not run" % (ran, failures, not_run))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
