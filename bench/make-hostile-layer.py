#!/usr/bin/env python3
"""Writes a one-layer OCI image layout whose layer stresses the pull's resource bounds.

  make-hostile-layer.py DIR many-files [N]      N one-byte files in 100-file directories
  make-hostile-layer.py DIR deep [N]            N nested directories (GNU long names)
  make-hostile-layer.py DIR xattr-bomb [N]      N files, each with a 60 KiB PAX xattr
  make-hostile-layer.py DIR cap-bomb [N]        the same with security.capability (kept)

The layer is gzip-compressed (level 1) so the layout stays small.
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def members(kind, n):
    if kind == "many-files":
        dirs = set()
        for i in range(n):
            d = "d%05d" % (i // 100)
            if d not in dirs:
                dirs.add(d)
                t = tarfile.TarInfo(d)
                t.type = tarfile.DIRTYPE
                t.mode = 0o755
                yield t, None
            t = tarfile.TarInfo("%s/f%07d" % (d, i))
            t.size = 1
            yield t, b"x"
    elif kind == "deep":
        path = ""
        for i in range(n):
            path += "d/"
            t = tarfile.TarInfo(path.rstrip("/"))
            t.type = tarfile.DIRTYPE
            t.mode = 0o755
            yield t, None
    elif kind in ("xattr-bomb", "cap-bomb"):
        name = "user.bomb" if kind == "xattr-bomb" else "security.capability"
        value = "v" * 60000
        for i in range(n):
            t = tarfile.TarInfo("f%07d" % i)
            t.size = 1
            t.pax_headers = {"SCHILY.xattr." + name: value}
            yield t, b"x"
    else:
        raise SystemExit("unknown kind " + kind)


def main():
    out, kind = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else {"many-files": 300000, "deep": 50000}.get(kind, 20000)
    os.makedirs(out + "/blobs/sha256", exist_ok=True)
    raw = io.BytesIO()
    fmt = tarfile.GNU_FORMAT if kind in ("many-files", "deep") else tarfile.PAX_FORMAT
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for info, data in members(kind, n):
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data) if data else None)
    layer = raw.getvalue()
    gz = gzip.compress(layer, compresslevel=1, mtime=0)

    def blob(data):
        d = hashlib.sha256(data).hexdigest()
        with open("%s/blobs/sha256/%s" % (out, d), "wb") as f:
            f.write(data)
        return "sha256:" + d

    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": blob(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": blob(gz), "size": len(gz)}]}).encode()
    index = {"schemaVersion": 2,
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": blob(manifest), "size": len(manifest),
                            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    with open(out + "/index.json", "w") as f:
        json.dump(index, f)
    with open(out + "/oci-layout", "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    print("%s: %d uncompressed, %d compressed bytes" % (kind, len(layer), len(gz)), file=sys.stderr)


main()
