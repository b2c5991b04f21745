#!/usr/bin/env python3
"""gen-inline-dumpfile.py N: print a deterministic composefs dumpfile of about N entries that
is heavy in inline data and xattrs (about 1.6 KB a line: 300,000 entries make ~470 MB).

Most entries are small regular files stored inline (up to the 5000-byte limit), half text and
half binary (escaped \\xNN, as composefs-info dump writes it); every file carries an SELinux
label, most a unique user.* checksum and some a larger user.* comment; directories carry an
opaque-style trusted xattr. Symlinks and external files are mixed in."""
import hashlib
import random
import sys

LABELS = [f"system_u:object_r:{t}_t:s0" for t in ("usr", "etc", "lib", "bin", "var_lib", "man")]
WORDS = ("alpha beta gamma delta config value enable disable path user group mode "
         "service socket timer target mount device network library include define").split()


def escape_bytes(data):
    if not data:
        return "-"
    # bytes.hex with a separator is the fast way to get \xNN for every byte.
    return "\\x" + data.hex("\\").replace("\\", "\\x")


def text_content(rng, size):
    words = []
    n = 0
    while n < size:
        w = WORDS[rng.randrange(len(WORDS))]
        words.append(w)
        n += len(w) + 1
    text = " ".join(words)[:size]
    if not text:
        return "-"
    # Spaces and newlines must be escaped in a dumpfile field.
    return text.replace("\\", "\\\\").replace(" ", "\\x20")


def main():
    target = int(sys.argv[1])
    rng = random.Random(16)
    out = sys.stdout
    out.write("/ 0 40755 2 0 0 0 1700000000.0 - - - security.selinux=system_u:object_r:root_t:s0\n")
    count = 1
    stack = [("", 0)]
    dir_id = 0
    while count < target:
        parent, depth = stack[rng.randrange(len(stack))]
        dir_id += 1
        path = f"{parent}/dir{dir_id:06d}"
        out.write(f"{path} 0 40755 2 0 0 0 1700000000.{dir_id % 1000} - - - "
                  f"security.selinux={LABELS[dir_id % len(LABELS)]} trusted.dirmark=y\n")
        count += 1
        if depth < 6:
            stack.append((path, depth + 1))
        for i in range(rng.randint(1, 120)):
            name = f"{path}/file{i:04d}"
            mtime = f"{1700000000 + rng.randrange(100000)}.{rng.randrange(10**9)}"
            label = LABELS[rng.randrange(len(LABELS))]
            h = hashlib.sha256(name.encode()).hexdigest()
            kind = rng.random()
            if kind < 0.80:
                size = min(5000, int(rng.expovariate(1 / 562)))
                if rng.random() < 0.5:
                    content = escape_bytes(rng.randbytes(size))
                else:
                    content = text_content(rng, size)
                    size = 0 if content == "-" else len(content.replace("\\x20", " ").replace("\\\\", "\\"))
                xattrs = f" security.selinux={label}"
                if rng.random() < 0.8:
                    xattrs += f" user.checksum={h}"
                if rng.random() < 0.2:
                    xattrs += " user.comment=" + escape_bytes(rng.randbytes(rng.randint(50, 400)))
                out.write(f"{name} {size} 100644 1 0 0 0 {mtime} - {content} -{xattrs}\n")
            elif kind < 0.92:
                size = rng.randint(5001, 10**7)
                out.write(f"{name} {size} 100644 1 0 0 0 {mtime} {h[:2]}/{h[2:]} - {h} "
                          f"security.selinux={label}\n")
            else:
                out.write(f"{name} 12 120777 1 0 0 0 {mtime} ../target/{i} - - "
                          f"security.selinux={label}\n")
            count += 1
            if count >= target:
                break


main()
