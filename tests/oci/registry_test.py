#!/usr/bin/env python3
"""cfsctl oci pull docker://… against a real registry (Debian's docker-registry) on 127.0.0.1.

The registry runs from a config in a temporary directory on a free port and is stopped by
its PID; images are pushed with skopeo.
Images are written here with Python's tarfile (no cfs code). Checks:
  - a docker:// pull gives the same manifest and image id as a pull of the oci: layout;
  - an image index resolves to this machine's architecture, and pulls by digest work;
  - tampered manifests (by tag and by digest) and layer blobs are refused;
  - bearer-token auth: docker-registry's token auth needs a JWT issuer, so a small proxy
    written here (BearerProxy) stands in front of the real registry, answers 401 with a
    Bearer challenge and issues tokens for the credentials of an auth.json;
  - registries.conf: a mirror serves a registry that is down;
  - the registry killed mid-pull and back soon: the blob transfer resumes with a ranged GET;
  - the registry killed and not back: a clear error naming the registry and repository, the
    repository passes fsck and oci fsck with nothing of the image named, and the next pull
    succeeds once the registry is back.
Exit 77 (skip) when docker-registry or skopeo is missing.
"""
import argparse
import base64
import gzip
import hashlib
import io
import http.client
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request

FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)


def free_port():
    for _ in range(200):
        port = random.randint(15000, 15999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 15000-15999")


class Registry:
    def __init__(self, work, port):
        self.port = port
        self.dir = os.path.join(work, f"registry-{port}")
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "config.yml")
        with open(self.config, "w") as f:
            f.write("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {self.dir}/storage\n"
                    f"http:\n  addr: 127.0.0.1:{port}\n")
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "log"), "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", self.config],
                                     stdout=log, stderr=log)
        log.close()
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("docker-registry exited; see " + self.dir + "/log")
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not come up")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


class BearerProxy(http.server.ThreadingHTTPServer):
    """Token auth in front of a registry: /token checks Basic credentials and issues a token;
    /v2/… needs it (401 + WWW-Authenticate: Bearer otherwise) and is forwarded."""

    daemon_threads = True

    def __init__(self, port, upstream, user, password):
        self.upstream = upstream
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.token = "tok-" + str(random.getrandbits(64))
        self.token_requests = []  # (authorization, query)
        self.tamper = None  # "manifests" or "blobs": bodies of those answers get altered
        self.identity_token = "idt-" + str(random.getrandbits(64))
        self.refuse_post = False  # a token server without the OAuth2 POST
        super().__init__(("127.0.0.1", port), ProxyHandler)


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        if self.path.startswith("/token"):
            auth = self.headers.get("Authorization", "")
            srv.token_requests.append((auth, self.path))
            if auth != srv.basic:
                return self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"bad login"}]}')
            return self.reply(200, json.dumps({"token": srv.token}).encode())
        if self.headers.get("Authorization") != "Bearer " + srv.token:
            port = srv.server_address[1]
            return self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"auth required"}]}',
                              {"WWW-Authenticate":
                               f'Bearer realm="http://127.0.0.1:{port}/token",service="test"'})
        conn = http.client.HTTPConnection("127.0.0.1", srv.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
        conn.request("GET", self.path, headers=headers)
        resp = conn.getresponse()
        # Blobs: only the layers (the config, a few hundred bytes, is checked the same way).
        tamper = srv.tamper and f"/{srv.tamper}/" in self.path and resp.status == 200 and (
            srv.tamper == "manifests" or int(resp.getheader("Content-Length", "0")) > 10000)
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding") and not (
                    tamper and k.lower() == "content-length"):
                self.send_header(k, v)
        body = None
        if tamper:
            body = resp.read()
            # A manifest stays valid JSON (a trailing space); a blob gets one byte flipped.
            body = body + b" " if srv.tamper == "manifests" else \
                body[:-1] + bytes([body[-1] ^ 1])
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body is not None:
            self.wfile.write(body)
        while body is None:
            chunk = resp.read(65536)
            if not chunk:
                break
            self.wfile.write(chunk)
        conn.close()

    def do_POST(self):
        # OAuth2 token requests: grant_type=refresh_token with the identity token.
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        srv.token_requests.append(("POST", body))
        if not self.path.startswith("/token") or srv.refuse_post:
            return self.reply(404, b'{"errors":[{"code":"NOT_FOUND","message":"no POST"}]}')
        form = urllib.parse.parse_qs(body)
        if form.get("grant_type") != ["refresh_token"] or \
                form.get("refresh_token") != [srv.identity_token]:
            return self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"bad token"}]}')
        return self.reply(200, json.dumps({"access_token": srv.token}).encode())

    def reply(self, status, body, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class CountingForwarder:
    """A TCP forwarder in front of a registry that counts the connections made through it and
    the HTTP requests sent on them (the client's bytes are kept; requests are small)."""

    def __init__(self, port, upstream):
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.lock = threading.Lock()
        self.sent = []  # the client's bytes, one bytearray per connection
        self.received = 0  # bytes the registry sent back, all connections
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            sent = bytearray()
            with self.lock:
                self.sent.append(sent)
            threading.Thread(target=self.pipe, args=(client, server, sent), daemon=True).start()
            threading.Thread(target=self.pipe, args=(server, client, None), daemon=True).start()

    def pipe(self, src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    if record is not None:
                        record.extend(data)
                    else:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def counts(self):
        """(plain HTTP connections, requests) so far; the TLS probe a client makes before it
        falls back to http on a loopback registry is not counted."""
        with self.lock:
            plain = [bytes(b) for b in self.sent if b.startswith(b"GET ")]
            return len(plain), sum(b.count(b"GET /v2/") for b in plain)

    def bytes_received(self):
        with self.lock:
            return self.received

    def close(self):
        self.sock.close()


class Cfs:
    def __init__(self, cfsctl, work):
        self.cfsctl = cfsctl
        self.work = work
        self.n = 0

    def repo(self):
        self.n += 1
        path = os.path.join(self.work, f"repo{self.n}")
        subprocess.run([self.cfsctl, "--repo", path, "init", "--insecure"], check=True,
                       stdout=subprocess.DEVNULL)
        return path

    def run(self, repo, *args, env=None):
        return subprocess.run([self.cfsctl, "--repo", repo, *args], capture_output=True,
                              text=True, env=env)

    def pull(self, repo, source, *opts, env=None):
        r = self.run(repo, "oci", "pull", source, "pulled", *opts, env=env)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
        return r


def field(output, name):
    for line in output.splitlines():
        if line.startswith(name + " "):
            return line.split(" ", 1)[1]
    return None


def skopeo_push(layout, dest, *extra):
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", *extra, layout, dest],
                   check=True)


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest


def result(work):
    """The test's exit status: 1 if a check failed (its work directory is kept for a look),
    else 0 with the work directory removed."""
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


def tar_of(files):
    """A PAX tar (Python's tarfile) of (path, bytes) regular files, with their parent
    directories, fixed modes and mtimes, ending right after its end-of-archive blocks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = set()
        for path, data in files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
                    tar.addfile(info)
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_layout(out, tag, layers, compress=True):
    """An OCI layout (Python's tarfile and gzip, no cfs code) with one image named tag;
    layers: lists of (path, bytes) regular files."""
    os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    descs, diff_ids = [], []
    for files in layers:
        raw = tar_of(files)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        blob = gzip.compress(raw, compresslevel=1, mtime=0) if compress else raw
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        descs.append({"mediaType": media, "digest": write_blob(out, blob), "size": len(blob)})
    config = json.dumps({"architecture": host_arch(), "os": "linux",
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


def v2_after_v1(cfs, host, name, v2_layers, extra=None):
    """The partial-pull sequence chunked_test.py and estargz_test.py share, for the images
    docker://host/name:v1 and :v2 (v2 sharing most files): v1 then v2 into one repository,
    v2 fetching at most 15% of its compressed size (v2_layers: its manifest's layers; extra:
    (r2 -> (ok, what)) checks more of that pull); a --no-partial pull and a partial pull into
    a fresh repository give the same image id; fsck and oci fsck pass; every v2 layer stream
    equals the full pull's. Returns (repo, full_repo, fetched bytes of v2, full pull)."""
    v2_size = sum(l["size"] for l in v2_layers)
    repo = cfs.repo()
    r1 = cfs.pull(repo, f"docker://{host}/{name}:v1")
    check(r1.returncode == 0 and field(r1.stdout, "partial") is not None,
          "v1: partial pull succeeds")
    r2 = cfs.run(repo, "oci", "pull", f"docker://{host}/{name}:v2", "v2")
    if r2.returncode != 0:
        print(r2.stderr, file=sys.stderr)
    partial = field(r2.stdout, "partial") or ""
    print("     v2: " + partial)
    fetched = int(partial.split(" bytes fetched")[0].split(", ")[-1]) if partial else -1
    if extra:
        ok, what = extra(r2)
        check(r2.returncode == 0 and ok, "v2 after v1: " + what)
    check(r2.returncode == 0 and 0 < fetched <= 0.15 * v2_size,
          f"v2 after v1: {fetched} bytes fetched of {v2_size} compressed (<= 15%)")
    full_repo = cfs.repo()
    full = cfs.pull(full_repo, f"docker://{host}/{name}:v2", "--no-partial")
    check(full.returncode == 0 and field(full.stdout, "partial") is None,
          "v2 --no-partial: full pull succeeds")
    check(field(full.stdout, "image") == field(r2.stdout, "image") and field(full.stdout, "image"),
          "v2: partial pull gives the image id of a full pull")
    fresh_repo = cfs.repo()
    fresh = cfs.pull(fresh_repo, f"docker://{host}/{name}:v2")
    check(fresh.returncode == 0 and field(fresh.stdout, "partial") is not None
          and field(fresh.stdout, "image") == field(full.stdout, "image"),
          "v2 into a fresh repository: partial pull gives the full pull's image id")
    for rp in (repo, full_repo, fresh_repo):
        check(cfs.run(rp, "fsck").returncode == 0 and cfs.run(rp, "oci", "fsck").returncode == 0,
              "fsck and oci fsck pass after the pulls")
    # The layers are stored as a full pull stores them.
    same = 0
    for s in sorted(s for s in os.listdir(os.path.join(repo, "streams")) if "layer" in s):
        if os.path.exists(os.path.join(full_repo, "streams", s)):
            a = subprocess.run([cfs.cfsctl, "--repo", repo, "cat", s], capture_output=True)
            b = subprocess.run([cfs.cfsctl, "--repo", full_repo, "cat", s], capture_output=True)
            check(a.returncode == 0 and a.stdout == b.stdout, f"{s}: same tar as a full pull")
            same += 1
    check(same == len(v2_layers), "every v2 layer stream compared with a full pull's")
    return repo, full_repo, fetched, full


def sample_files(seed, count, size):
    rnd = random.Random(seed)
    return [(f"usr/share/{seed}/f{i}", rnd.randbytes(rnd.randint(1, size))) for i in range(count)]


def wait_for_objects(repo, timeout=30):
    """Returns once the pull stored its first file object (the big layer is streaming)."""
    deadline = time.time() + timeout
    objects = os.path.join(repo, "objects")
    while time.time() < deadline:
        for root, _, files in os.walk(objects):
            if files:
                return
        time.sleep(0.05)
    raise RuntimeError("the pull stored no object within %d s" % timeout)


def host_arch():
    m = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def make_index_layout(a, b, out):
    """An OCI layout whose image index lists a (this machine's architecture) and b (another)."""
    shutil.copytree(a, out)
    for name in os.listdir(os.path.join(b, "blobs", "sha256")):
        shutil.copy(os.path.join(b, "blobs", "sha256", name), os.path.join(out, "blobs", "sha256"))
    ma = json.load(open(os.path.join(a, "index.json")))["manifests"][0]
    mb = json.load(open(os.path.join(b, "index.json")))["manifests"][0]
    other = "arm64" if host_arch() != "arm64" else "amd64"
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [
                 {"mediaType": mb["mediaType"], "digest": mb["digest"], "size": mb["size"],
                  "platform": {"architecture": other, "os": "linux"}},
                 {"mediaType": ma["mediaType"], "digest": ma["digest"], "size": ma["size"],
                  "platform": {"architecture": host_arch(), "os": "linux"}}]}
    data = json.dumps(index).encode()
    top = {"schemaVersion": 2, "manifests": [
        {"mediaType": index["mediaType"], "digest": write_blob(out, data), "size": len(data),
         "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(top, f)
    return ma["digest"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cfsctl", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    for tool in ("docker-registry", "skopeo"):
        if not shutil.which(tool):
            print(f"SKIP: {tool} is not installed (tools/setup-deps.sh)")
            return 77
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    work = tempfile.mkdtemp(dir=args.work)
    cfs = Cfs(args.cfsctl, work)
    reg = Registry(work, free_port())
    proxy = None
    try:
        reg.start()
        host = f"127.0.0.1:{reg.port}"
        v1 = os.path.join(work, "v1")
        other = os.path.join(work, "other")
        big = os.path.join(work, "big")
        base = [("etc/os-release", b"ID=sample\n"), ("usr/bin/hello", b"#!/bin/sh\n")]
        make_layout(v1, "v1", [base, sample_files("v1", 40, 50000)])
        make_layout(other, "v1", [base, sample_files("other", 10, 5000)])
        # Larger than what the kernel's socket buffers hold on loopback (so a registry killed
        # mid-transfer cuts it) and uncompressed (so --limit-rate paces the whole pull).
        rnd = random.Random("big")
        make_layout(big, "v1", [base, [(f"big/f{i}", rnd.randbytes(4 << 20)) for i in range(8)]],
                    compress=False)
        skopeo_push(f"oci:{v1}:v1", f"docker://{host}/test/img:v1")
        skopeo_push(f"oci:{big}:v1", f"docker://{host}/test/big:v1")
        multi = os.path.join(work, "multi")
        host_manifest = make_index_layout(v1, other, multi)
        skopeo_push(f"oci:{multi}:multi", f"docker://{host}/test/multi:latest", "--all")

        # Same image as the oci: layout.
        ref_repo = cfs.repo()
        ref = cfs.pull(ref_repo, f"oci:{v1}:v1")
        repo = cfs.repo()
        r = cfs.pull(repo, f"docker://{host}/test/img:v1")
        check(r.returncode == 0, "docker:// pull succeeds")
        check(field(r.stdout, "image") == field(ref.stdout, "image") and field(r.stdout, "image"),
              "docker:// pull gives the oci: layout's image id")
        check(field(r.stdout, "manifest") == field(ref.stdout, "manifest"),
              "docker:// pull gives the oci: layout's manifest digest")

        # Image index -> this machine's architecture; by digest too.
        repo = cfs.repo()
        r = cfs.pull(repo, f"docker://{host}/test/multi:latest")
        check(r.returncode == 0 and field(r.stdout, "manifest") == host_manifest,
              "an image index resolves to linux/" + host_arch())
        check(field(r.stdout, "image") == field(ref.stdout, "image"),
              "the index's image has the oci: layout's image id")
        r = cfs.pull(cfs.repo(), f"docker://{host}/test/img@{host_manifest}")
        check(r.returncode == 0 and field(r.stdout, "manifest") == host_manifest,
              "pull by manifest digest")

        # Connections are kept open between requests: a pull through a forwarder that counts
        # them makes several requests on each (layers are fetched by two threads at most).
        fwd = CountingForwarder(free_port(), reg.port)
        fhost = f"127.0.0.1:{fwd.sock.getsockname()[1]}"
        r = cfs.pull(cfs.repo(), f"docker://{fhost}/test/img:v1", "--threads", "2")
        conns, reqs = fwd.counts()
        print(f"     {reqs} requests on {conns} connections")
        check(r.returncode == 0 and field(r.stdout, "image") == field(ref.stdout, "image")
              and reqs >= 4 and 1 <= conns <= 2,
              "connection reuse: a pull's requests share at most one connection per thread")
        fwd.close()

        # HTTP errors name the registry, the repository and the status.
        r = cfs.pull(cfs.repo(), f"docker://{host}/test/img:nope")
        check(r.returncode != 0 and f"registry {host}, repository test/img" in r.stderr
              and "HTTP 404" in r.stderr and "MANIFEST_UNKNOWN" in r.stderr,
              "a missing tag: HTTP 404 naming registry and repository")

        # Bearer token auth through the proxy.
        pport = free_port()
        proxy = BearerProxy(pport, reg.port, "alice", "s3cret")
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        phost = f"127.0.0.1:{pport}"
        authfile = os.path.join(work, "auth.json")
        with open(authfile, "w") as f:
            json.dump({"auths": {phost: {"auth": base64.b64encode(b"alice:s3cret").decode()}}}, f)
        env = dict(os.environ, REGISTRY_AUTH_FILE=authfile, HOME=work)
        env.pop("XDG_RUNTIME_DIR", None)
        r = cfs.pull(cfs.repo(), f"docker://{phost}/test/img:v1", env=env)
        check(r.returncode == 0 and field(r.stdout, "image") == field(ref.stdout, "image"),
              "bearer auth: pull with credentials from $REGISTRY_AUTH_FILE")
        check(any(a == proxy.basic and "scope=repository%3Atest%2Fimg%3Apull" in q
                  and "service=test" in q for a, q in proxy.token_requests),
              "bearer auth: token asked with the credentials, service and pull scope")
        env_none = dict(os.environ, HOME=work)
        env_none.pop("REGISTRY_AUTH_FILE", None)
        env_none.pop("XDG_RUNTIME_DIR", None)
        r = cfs.pull(cfs.repo(), f"docker://{phost}/test/img:v1", "--retry-times", "0",
                     env=env_none)
        check(r.returncode != 0 and "HTTP 401" in r.stderr and "no credentials" in r.stderr,
              "bearer auth: no credentials gives HTTP 401 saying so")
        bad = os.path.join(work, "bad-auth.json")
        with open(bad, "w") as f:
            json.dump({"auths": {phost: {"auth": base64.b64encode(b"alice:wrong").decode()}}}, f)
        r = cfs.pull(cfs.repo(), f"docker://{phost}/test/img:v1", "--authfile", bad,
                     "--retry-times", "0", env=env_none)
        check(r.returncode != 0 and "HTTP 401" in r.stderr and bad in r.stderr,
              "bearer auth: refused credentials name their auth file")

        # Credential helpers (real executables on PATH) and identity tokens.
        helper_bin = os.path.join(work, "bin")
        os.makedirs(helper_bin)
        for name, user, secret in (("cfstest", "alice", "s3cret"),
                                   ("cfstoken", "<token>", proxy.identity_token)):
            path = os.path.join(helper_bin, "docker-credential-" + name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r host\n"
                        f'echo "$host" >> "{path}.log"\n'
                        f'if [ "$host" = "{phost}" ]; then\n'
                        f"  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\","
                        f"\"Secret\":\"{secret}\"}}' \"$host\"\n"
                        "else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n")
            os.chmod(path, 0o755)

        def pull_with_auth(name, content, *opts):
            path = os.path.join(work, name)
            with open(path, "w") as f:
                json.dump(content, f)
            henv = dict(env_none, PATH=helper_bin + ":" + os.environ.get("PATH", ""),
                        REGISTRY_AUTH_FILE=path)
            proxy.token_requests.clear()
            r = cfs.pull(cfs.repo(), f"docker://{phost}/test/img:v1", "--retry-times", "0",
                         *opts, env=henv)
            check("s3cret" not in r.stderr + r.stdout
                  and proxy.identity_token not in r.stderr + r.stdout,
                  f"{name}: no secret in the output")
            return r, path

        r, _ = pull_with_auth("helper-auth.json", {"credHelpers": {phost: "cfstest"}})
        with open(os.path.join(helper_bin, "docker-credential-cfstest.log")) as f:
            asked = f.read().split()
        check(r.returncode == 0 and field(r.stdout, "image") == field(ref.stdout, "image")
              and asked == [phost] and any(a == proxy.basic for a, _ in proxy.token_requests),
              "credHelpers: the helper's user and password, asked for the registry host")
        r, _ = pull_with_auth("store-auth.json", {"credsStore": "cfstoken", "auths": {}})
        check(r.returncode == 0 and field(r.stdout, "image") == field(ref.stdout, "image")
              and any(a == "POST" and "grant_type=refresh_token" in q and "service=test" in q
                      for a, q in proxy.token_requests),
              "credsStore: a helper's identity token exchanged with an OAuth2 POST")
        r, _ = pull_with_auth("idtoken-auth.json",
                              {"auths": {phost: {"identitytoken": proxy.identity_token}}})
        check(r.returncode == 0 and field(r.stdout, "image") == field(ref.stdout, "image"),
              "auth.json identitytoken: exchanged with an OAuth2 POST")
        proxy.refuse_post = True
        r, _ = pull_with_auth("idtoken-auth.json",
                              {"auths": {phost: {"identitytoken": proxy.identity_token}}})
        check(r.returncode != 0 and "asking with a GET" in r.stderr and "HTTP 401" in r.stderr
              and any(a != "POST" for a, _ in proxy.token_requests),
              "identity token, token server without POST: falls back to a GET")
        proxy.refuse_post = False
        r, path = pull_with_auth("missing-helper.json", {"credHelpers": {phost: "nosuch"}})
        check(r.returncode != 0 and "docker-credential-nosuch" in r.stderr and path in r.stderr
              and phost in r.stderr,
              "a helper that is not installed: error naming it, the registry and the auth file")
        print("     error: " + r.stderr.strip().splitlines()[-1])
        # Helpers run only when a registry asks for credentials.
        store_only = os.path.join(work, "store-only.json")
        with open(store_only, "w") as f:
            json.dump({"credsStore": "nosuch"}, f)
        nenv = dict(env_none, REGISTRY_AUTH_FILE=store_only)
        r = cfs.pull(cfs.repo(), f"docker://{host}/test/img:v1", env=nenv)
        check(r.returncode == 0, "a registry without auth: the auth file's helper is not run")

        # Tampered answers: manifests are checked against the digest asked for or the
        # registry's Docker-Content-Digest, blobs against the manifest's digest.
        proxy.tamper = "manifests"
        r = cfs.pull(cfs.repo(), f"docker://{phost}/test/img:v1", env=env)
        check(r.returncode != 0 and "Docker-Content-Digest" in r.stderr,
              "tampered manifest by tag: refused (Docker-Content-Digest)")
        r = cfs.pull(cfs.repo(), f"docker://{phost}/test/img@{host_manifest}", env=env)
        check(r.returncode != 0 and "corrupt or tampered" in r.stderr,
              "tampered manifest by digest: refused")
        proxy.tamper = "blobs"
        repo = cfs.repo()
        r = cfs.pull(repo, f"docker://{phost}/test/img:v1", env=env)
        check(r.returncode != 0 and "corrupt or tampered" in r.stderr
              and cfs.run(repo, "fsck").returncode == 0
              and "pulled" not in cfs.run(repo, "oci", "images").stdout,
              "tampered blob: refused, nothing tagged, fsck passes")
        proxy.tamper = None

        # registries.conf: a mirror for a registry that is down.
        dead = free_port()
        conf = os.path.join(work, "registries.conf")
        with open(conf, "w") as f:
            f.write(f'[[registry]]\nlocation = "127.0.0.1:{dead}/mirrored"\n'
                    f'[[registry.mirror]]\nlocation = "{host}/test"\n')
        r = cfs.pull(cfs.repo(), f"docker://127.0.0.1:{dead}/mirrored/img:v1",
                     "--registries-conf", conf, "--retry-times", "0")
        check(r.returncode == 0 and field(r.stdout, "image") == field(ref.stdout, "image"),
              "registries.conf: pulled through the mirror")

        # A mirror (a second docker-registry) that lacks one layer: that blob comes from the
        # next location, the registry itself; the others from the mirror.
        mreg = Registry(work, free_port())
        mreg.start()
        try:
            mhost = f"127.0.0.1:{mreg.port}"
            skopeo_push(f"oci:{v1}:v1", f"docker://{mhost}/test/img:v1")
            req = urllib.request.Request(f"http://{mhost}/v2/test/img/manifests/v1", headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json"})
            layers = [l["digest"] for l in json.load(urllib.request.urlopen(req))["layers"]]
            missing = layers[-1]
            shutil.rmtree(os.path.join(mreg.dir, "storage/docker/registry/v2/repositories/test/img",
                                       "_layers/sha256", missing.split(":")[1]))
            conf2 = os.path.join(work, "registries-partial-mirror.conf")
            with open(conf2, "w") as f:
                f.write(f'[[registry]]\nlocation = "{host}/test"\n'
                        f'[[registry.mirror]]\nlocation = "{mhost}/test"\n')
            r = cfs.pull(cfs.repo(), f"docker://{host}/test/img:v1", "--registries-conf", conf2,
                         "--retry-times", "0")
            check(r.returncode == 0 and field(r.stdout, "image") == field(ref.stdout, "image")
                  and f"registry {mhost}, repository test/img: blob {missing}" in r.stderr
                  and "HTTP 404" in r.stderr and "trying the next location" in r.stderr,
                  "registries.conf: a blob the mirror lacks comes from the registry")
            # The same with the registry itself down: the error names both locations.
            with open(conf2, "w") as f:
                f.write(f'[[registry]]\nlocation = "127.0.0.1:{dead}/gone"\n'
                        f'[[registry.mirror]]\nlocation = "{mhost}/test"\n')
            repo = cfs.repo()
            r = cfs.pull(repo, f"docker://127.0.0.1:{dead}/gone/img:v1", "--registries-conf",
                         conf2, "--retry-times", "0")
            err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
            check(r.returncode != 0 and f"registry {mhost}, repository test/img: blob {missing}"
                  in err and "HTTP 404" in err and f"registry 127.0.0.1:{dead}" in err
                  and "pulled" not in cfs.run(repo, "oci", "images").stdout,
                  "registries.conf: a blob no location has: the error names each location")
            print("     error: " + err)
        finally:
            mreg.kill()

        # Killed mid-pull and back within the retries: the transfer resumes.
        big_ref = cfs.pull(cfs.repo(), f"oci:{big}:v1")
        repo = cfs.repo()
        proc = subprocess.Popen([cfs.cfsctl, "--repo", repo, "oci", "pull",
                                 f"docker://{host}/test/big:v1", "big", "--limit-rate", "8M",
                                 "--retry-times", "6", "--retry-delay-ms", "300"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_objects(repo)
        reg.kill()
        time.sleep(1.0)
        reg.start()
        out, err = proc.communicate(timeout=120)
        check(proc.returncode == 0 and field(out, "image") == field(big_ref.stdout, "image"),
              "registry killed mid-pull and back: the pull succeeds with the right image")
        check("resumed at byte" in err and "ignored the range" not in err,
              "registry killed mid-pull and back: the blob resumed with a ranged GET")
        if "resumed at byte" not in err:
            print(err, file=sys.stderr)

        # Killed and not back: clear error, consistent repository, next pull succeeds.
        repo = cfs.repo()
        proc = subprocess.Popen([cfs.cfsctl, "--repo", repo, "oci", "pull",
                                 f"docker://{host}/test/big:v1", "big", "--limit-rate", "8M",
                                 "--retry-times", "1", "--retry-delay-ms", "200"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_objects(repo)
        reg.kill()
        out, err = proc.communicate(timeout=120)
        check(proc.returncode != 0 and f"registry {host}, repository test/big" in err
              and "blob sha256:" in err and "gave up after 2 attempts" in err,
              "registry killed: the pull fails naming registry, repository and blob")
        print("     error: " + err.strip().splitlines()[-1])
        fsck = cfs.run(repo, "fsck")
        check(fsck.returncode == 0, "registry killed: fsck passes")
        ofsck = cfs.run(repo, "oci", "fsck")
        check(ofsck.returncode == 0, "registry killed: oci fsck passes")
        images = cfs.run(repo, "oci", "images")
        check(images.returncode == 0 and "big" not in images.stdout,
              "registry killed: no image tagged")
        streams = os.listdir(os.path.join(repo, "streams"))
        check(not [s for s in streams if s.startswith("oci-")],
              "registry killed: no stream named")
        reg.start()
        r = cfs.pull(repo, f"docker://{host}/test/big:v1")
        check(r.returncode == 0 and field(r.stdout, "image") == field(big_ref.stdout, "image"),
              "registry back: the next pull succeeds")
        check(cfs.run(repo, "fsck").returncode == 0 and cfs.run(repo, "oci", "fsck").returncode == 0,
              "registry back: fsck and oci fsck pass")
    finally:
        if proxy:
            proxy.shutdown()
        reg.kill()
    return result(work)


if __name__ == "__main__":
    sys.exit(main())
