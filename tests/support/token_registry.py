#!/usr/bin/env python3
"""A tiny registry v2 look-alike for the registry client's unit tests.

Usage: token_registry.py PORT_FILE. Listens on 127.0.0.1 (a free port, written to PORT_FILE once
it listens) and serves, under /v2/<repo>/manifests/v1 and /v2/<repo>/blobs/<digest>:
  private  bearer auth; the token server wants basic user:pass
  public   bearer auth; anonymous tokens are fine
  basic    basic auth user:pass
  flaky    503 twice, then the manifest
  busy     always 429
  missing  404 with a registry error body
  corrupt  blobs whose bytes do not match their digest
  upload   bearer auth (anonymous is fine); blob uploads, whose POST sends a Location on
           http://localhost:PORT (another origin), where /elsewhere/<id> takes the PUT
  redirect blob GETs redirect to /v2/private/... on http://localhost:PORT, which answers 401
  filerealm  a bearer challenge whose realm is a file:// URL
  hugelen  HEAD of the manifest says Content-Length 99999999999999999999999
  endless  404 with an error body that never ends
  slow     manifests answered after 5 seconds
GET /token is the token server; GET /_log lists the requests seen (path, authorization), and
POST /_reset forgets them.
"""
import base64
import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

MANIFEST = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": "sha256:" + "0" * 64, "size": 2},
    "layers": [],
}, separators=(",", ":")).encode()
BLOB = b"hello blob\n"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
GOOD_BASIC = "Basic " + base64.b64encode(b"user:pass").decode()

log = []
counts = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body=b"", headers=None, head=False):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def error(self, code, err, message, headers=None, head=False):
        body = json.dumps({"errors": [{"code": err, "message": message}]}).encode()
        self.reply(code, body, dict(headers or {}, **{"Content-Type": "application/json"}), head)

    def challenge(self, repo, head):
        realm = "http://127.0.0.1:%d/token" % self.server.server_port
        value = 'Bearer realm="%s",service="fake",scope="repository:%s:pull"' % (realm, repo)
        self.error(401, "UNAUTHORIZED", "authentication required",
                   {"WWW-Authenticate": value}, head)

    def do_POST(self):
        if self.path == "/_reset":
            with lock:
                log.clear()
                counts.clear()
            self.reply(200)
        else:
            self.serve(head=False)

    def do_PUT(self):
        self.serve(head=False)

    def do_PATCH(self):
        self.serve(head=False)

    def do_HEAD(self):
        self.serve(head=True)

    def do_GET(self):
        self.serve(head=False)

    def serve(self, head):
        auth = self.headers.get("Authorization", "")
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length", "0") or "0")
        if length:
            self.rfile.read(length)
        with lock:
            log.append({"path": self.path, "auth": auth, "method": self.command,
                        "host": self.headers.get("Host", "")})
        if url.path == "/_log":
            with lock:
                return self.reply(200, json.dumps(log).encode())
        if url.path == "/token":
            if auth == "":
                return self.reply(200, json.dumps({"token": "anon-token"}).encode())
            if auth == GOOD_BASIC:
                return self.reply(200, json.dumps({"access_token": "good-token"}).encode())
            return self.error(401, "UNAUTHORIZED", "bad credentials")
        if url.path.startswith("/elsewhere/") and self.command == "PUT":
            return self.reply(201)
        port = self.server.server_port
        if url.path == "/v2/upload/blobs/uploads/" and self.command == "POST":
            if auth not in ("Bearer good-token", "Bearer anon-token"):
                return self.challenge("upload", head)
            return self.reply(202, b"", {"Location": "http://localhost:%d/elsewhere/1" % port})
        parts = url.path.split("/")
        if len(parts) != 5 or parts[1] != "v2":
            return self.reply(404)
        repo, kind, ref = parts[2], parts[3], parts[4]
        with lock:
            counts[repo] = counts.get(repo, 0) + 1
            seen = counts[repo]
        if repo == "private" and auth != "Bearer good-token":
            return self.challenge(repo, head)
        if repo == "public" and auth not in ("Bearer good-token", "Bearer anon-token"):
            return self.challenge(repo, head)
        if repo == "basic" and auth != GOOD_BASIC:
            return self.error(401, "UNAUTHORIZED", "basic auth required",
                              {"WWW-Authenticate": 'Basic realm="fake"'}, head)
        if repo == "upload" and auth not in ("Bearer good-token", "Bearer anon-token"):
            return self.challenge(repo, head)
        if repo == "filerealm":
            return self.error(401, "UNAUTHORIZED", "authentication required",
                              {"WWW-Authenticate": 'Bearer realm="file:///etc/hostname"'}, head)
        if repo == "redirect" and kind == "blobs":
            where = "http://localhost:%d/v2/private/blobs/%s" % (port, ref)
            return self.reply(307, b"", {"Location": where}, head)
        if repo == "hugelen" and head:
            self.send_response(200)
            self.send_header("Docker-Content-Digest",
                             "sha256:" + hashlib.sha256(MANIFEST).hexdigest())
            self.send_header("Content-Length", "99999999999999999999999")
            return self.end_headers()
        if repo == "endless":
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(1 << 20):  # 64 GiB: "never" for a test
                    self.wfile.write(chunk)
            except OSError:
                pass
            return
        if repo == "slow":
            time.sleep(5)
        if repo == "flaky" and seen <= 2:
            return self.error(503, "UNAVAILABLE", "try again", head=head)
        if repo == "busy":
            return self.error(429, "TOOMANYREQUESTS", "slow down", {"Retry-After": "0"}, head)
        if repo == "missing":
            return self.error(404, "MANIFEST_UNKNOWN", "manifest unknown", head=head)
        if kind == "manifests" and ref == "v1":
            digest = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
            return self.reply(200, MANIFEST, {
                "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                "Docker-Content-Digest": digest}, head)
        if kind == "blobs" and repo == "upload":
            return self.error(404, "BLOB_UNKNOWN", "unknown", head=head)
        if kind == "blobs" and ref == BLOB_DIGEST:
            body = b"tampered!!\n" if repo == "corrupt" else BLOB
            return self.reply(200, body, {"Content-Type": "application/octet-stream"}, head)
        return self.error(404, "BLOB_UNKNOWN", "unknown", head=head)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_port))
    import os
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
