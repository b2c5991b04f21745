#!/usr/bin/env python3
"""gen-dumpfile.py N: print a deterministic composefs dumpfile with about N entries.

A realistic mix: directories of 1-200 entries, regular files (inline and external with a
digest), symlinks, hardlinked pairs, fifos and xattrs."""
import hashlib
import random
import sys


def main():
    target = int(sys.argv[1])
    rng = random.Random(42)
    out = sys.stdout
    out.write("/ 0 40755 2 0 0 0 1700000000.0 - - -\n")
    count = 1
    stack = [("", 0)]
    dir_id = 0
    while count < target:
        parent, depth = stack[rng.randrange(len(stack))]
        dir_id += 1
        path = f"{parent}/d{dir_id:07d}"
        out.write(f"{path} 0 40755 2 0 0 0 1700000000.{dir_id % 1000} - - - user.dir=x\n")
        count += 1
        if depth < 8:
            stack.append((path, depth + 1))
        n = rng.randint(1, 200)
        for i in range(n):
            name = f"{path}/f{i:04d}"
            kind = rng.random()
            mtime = f"{1700000000 + rng.randrange(100000)}.{rng.randrange(10**9)}"
            if kind < 0.18:
                size = rng.randint(0, 64)
                content = "x" * size if size else "-"
                out.write(f"{name} {size} 100644 1 0 0 0 {mtime} - {content} -\n")
            elif kind < 0.70:
                size = rng.randint(65, 10**7)
                h = hashlib.sha256(name.encode()).hexdigest()
                xattr = " security.selinux=system_u:object_r:usr_t:s0" if kind < 0.5 else ""
                out.write(f"{name} {size} 100644 1 0 0 0 {mtime} {h[:2]}/{h[2:]} - {h}{xattr}\n")
            elif kind < 0.90:
                out.write(f"{name} 12 120777 1 0 0 0 {mtime} ../target/{i} - -\n")
            elif kind < 0.92:
                # A hardlinked pair: the primary carries nlink 2, the link follows it.
                out.write(f"{name} 20 100644 2 0 0 0 {mtime} - {'y' * 20} -\n")
                out.write(f"{name}.hl 0 @100644 0 0 0 0 0.0 {name} - -\n")
                count += 1
            else:
                out.write(f"{name} 0 10644 1 0 0 0 {mtime} - - -\n")
            count += 1
            if count >= target:
                break


main()
