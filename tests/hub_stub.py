"""A minimal Hugging Face Hub API stub for tests: enough of the Hub for `create_repo`, `create_commit` /
`upload_file` / `upload_folder` / `push_to_hub` (preupload, regular files, git-LFS basic transfer) and for downloads
(`hf_hub_download`, `from_pretrained`, `ModelCard.load`, `model_info`, tree listing).

It runs `http.server` in a thread on 127.0.0.1 (a free port) and stores blobs in a temporary folder. Point
huggingface_hub at it with the environment of a *subprocess* (huggingface_hub reads these at import time):

    HF_ENDPOINT=<stub.endpoint> HF_TOKEN=<stub.token> HF_HUB_DISABLE_XET=1 HF_HUB_OFFLINE=0

(`HF_HUB_DISABLE_XET=1`: with hf_xet installed, LFS content would otherwise go to a Xet CAS server, which this stub
does not emulate; it answers the LFS batch API with the "basic" transfer.)

Endpoints (model and dataset repos):
    POST /api/repos/create                                  {"name", "organization", "type"} -> {"url", "name"}
    POST /api/validate-yaml                                 -> {"errors": [], "warnings": []}
    GET  /api/whoami-v2                                     -> {"name": "stub-user", ...}
    GET  /api/agent-harnesses                               -> empty agent registry
    POST /api/{type}s/{repo}/preupload/{rev}                -> {"files": [{"path", "uploadMode", "shouldIgnore",
                                                                           "oid"}]}
    POST /{repo}.git/info/lfs/objects/batch                 -> basic transfer: PUT /__lfs__/{oid}, POST verify
    POST /api/{type}s/{repo}/commit/{rev}                   ndjson: header, file, lfsFile, deletedFile, deletedFolder
    GET  /api/{type}s/{repo}[/revision/{rev}]               repo info with `sha` and `siblings`
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]            flat file listing
    POST /api/{type}s/{repo}/paths-info/{rev}               info of the given paths
    HEAD|GET /{repo}/resolve/{rev}/{path}                   X-Repo-Commit, ETag, Content-Length (+ X-Linked-Etag,
                                                            X-Linked-Size for LFS files); 404 with X-Error-Code
                                                            RepoNotFound / RevisionNotFound / EntryNotFound
Every request is recorded in `stub.requests` as (method, path); unknown routes answer 404 and are recorded in
`stub.unhandled`, so a test can say exactly which endpoint a client needed.
"""

import base64
import hashlib
import json
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


LFS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy", ".h5", ".onnx", ".msgpack", ".wav")


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class StoredFile:
    sha256: str  # blob key in the storage folder
    size: int
    lfs: bool

    @property
    def oid(self) -> str:
        """The oid the Hub reports for the file (the preupload `oid` compared by huggingface_hub)."""
        return self.sha256 if self.lfs else self.git_sha1

    git_sha1: str = ""


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    commits: list = field(default_factory=list)  # [(commit sha, {path: StoredFile})], oldest first
    branches: dict = field(default_factory=dict)  # branch name -> commit sha

    def tree(self, revision: str) -> tuple[str, dict] | None:
        sha = self.branches.get(revision, revision)
        for commit_sha, tree in self.commits:
            if commit_sha == sha:
                return commit_sha, tree
        return None


class HubStub:
    """The stub server. Use as a context manager; `endpoint`, `token`, `repos`, `requests`, `unhandled`."""

    token = "hf_stub_token_for_tests"

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="hub_stub_"))
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------------------------------
    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- storage ------------------------------------------------------------------------------------------------------
    def put_blob(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        (self.root / sha256).write_bytes(content)
        return sha256

    def has_blob(self, sha256: str) -> bool:
        return (self.root / sha256).is_file()

    def read_blob(self, sha256: str) -> bytes:
        return (self.root / sha256).read_bytes()

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, StoredFile]:
        """The files of a repo at a revision (for test assertions)."""
        return self.repos[(repo_type, repo_id)].tree(revision)[1]

    def new_commit(self, repo: Repo, branch: str, tree: dict, message: str) -> str:
        parent = repo.branches.get(branch, "")
        sha = hashlib.sha1(f"{parent}\n{message}\n{sorted((p, f.oid) for p, f in tree.items())}".encode()).hexdigest()
        repo.commits.append((sha, tree))
        repo.branches[branch] = sha
        return sha


# ---------------------------------------------------------------------------------------------------------------------
# Request handling
# ---------------------------------------------------------------------------------------------------------------------

_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_API_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("GET", re.compile(r"^/api/agent-harnesses$"), "agent_harnesses"),
    ("POST", re.compile(rf"^/api/(?P<type>model|dataset)s/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/(?P<type>model|dataset)s/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/(?P<type>model|dataset)s/{_REPO}/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    ("GET", re.compile(rf"^/api/(?P<type>model|dataset)s/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("GET", re.compile(rf"^/api/(?P<type>model|dataset)s/{_REPO}/revision/(?P<rev>[^/]+)$"), "repo_info"),
    ("GET", re.compile(rf"^/api/(?P<type>model|dataset)s/{_REPO}$"), "repo_info"),
    ("POST", re.compile(rf"^/(?P<prefix>datasets/)?{_REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/__lfs__/(?P<oid>[0-9a-f]{64})$"), "lfs_upload"),
    ("POST", re.compile(r"^/__lfs__/(?P<oid>[0-9a-f]{64})/verify$"), "lfs_verify"),
    ("GET", re.compile(rf"^/(?P<prefix>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/(?P<prefix>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


class _Response(Exception):
    """Raised by a route to answer with an error status."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.headers = status, message, error_code, headers or {}


def _make_handler(stub: HubStub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        # -- plumbing -------------------------------------------------------------------------------------------------
        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _json(self, data, status: int = 200, headers: dict | None = None):
            self._send(status, json.dumps(data).encode(), headers)

        def _dispatch(self):
            url = urlsplit(self.path)
            path = unquote(url.path)
            with stub.lock:
                stub.requests.append((self.command, path))
            for method, pattern, name in _API_ROUTES:
                match = pattern.match(path) if method == self.command else None
                if match:
                    try:
                        body = self._body() if self.command in ("POST", "PUT") else b""
                        getattr(self, f"route_{name}")(match.groupdict(), body, parse_qs(url.query))
                    except _Response as response:
                        headers = dict(response.headers)
                        if response.error_code:
                            headers["X-Error-Code"] = response.error_code
                        headers["X-Error-Message"] = response.message
                        self._json({"error": response.message}, response.status, headers)
                    return
            self._body() if self.command in ("POST", "PUT") else None
            with stub.lock:
                stub.unhandled.append((self.command, path))
            self._json({"error": f"hub stub: no route for {self.command} {path}"}, 404)

        do_GET = do_POST = do_PUT = do_HEAD = _dispatch

        def _repo(self, groups) -> Repo:
            repo_type = groups.get("type") or ("dataset" if groups.get("prefix") else "model")
            repo = stub.repos.get((repo_type, groups["repo"]))
            if repo is None:
                raise _Response(404, f"Repository {groups['repo']} not found", "RepoNotFound")
            return repo

        def _tree(self, repo: Repo, revision: str) -> tuple[str, dict]:
            found = repo.tree(unquote(revision))
            if found is None:
                raise _Response(404, f"Revision {revision} not found", "RevisionNotFound")
            return found

        def _file_entry(self, path: str, stored: StoredFile) -> dict:
            entry = {"type": "file", "path": path, "size": stored.size, "oid": stored.git_sha1}
            if stored.lfs:
                entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": 130}
            return entry

        # -- routes ---------------------------------------------------------------------------------------------------
        def route_create_repo(self, groups, body, query):
            payload = json.loads(body or b"{}")
            name, organization = payload.get("name"), payload.get("organization")
            repo_id = f"{organization}/{name}" if organization else f"stub-user/{name}"
            repo_type = payload.get("type") or "model"
            url = f"{stub.endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
            with stub.lock:
                if (repo_type, repo_id) in stub.repos:  # the Hub's 409 body carries the url (for exist_ok=True)
                    self._json({"error": "You already created this model repo", "url": url}, 409)
                    return
                repo = Repo(repo_id, repo_type)
                gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                initial = {".gitattributes": self._stored(gitattributes, lfs=False)}
                stub.new_commit(repo, "main", initial, "initial commit")
                stub.repos[(repo_type, repo_id)] = repo
            self._json({"url": url, "name": repo_id, "id": repo_id})

        def _stored(self, content: bytes, lfs: bool) -> StoredFile:
            sha256 = stub.put_blob(content)
            return StoredFile(sha256=sha256, size=len(content), lfs=lfs, git_sha1=git_blob_sha1(content))

        def route_validate_yaml(self, groups, body, query):
            self._json({"errors": [], "warnings": []})

        def route_whoami(self, groups, body, query):
            self._json({"type": "user", "name": "stub-user", "fullname": "Stub User", "orgs": [], "auth": {}})

        def route_agent_harnesses(self, groups, body, query):  # registry read by huggingface_hub's user agent
            self._json({"standardEnvVars": [], "harnesses": {}})

        def route_preupload(self, groups, body, query):
            repo = self._repo(groups)
            _, tree = self._tree(repo, groups["rev"])
            files = []
            for item in json.loads(body)["files"]:
                sample = base64.b64decode(item["sample"])
                lfs = item["path"].endswith(LFS_EXTENSIONS) or b"\0" in sample or item["size"] > 10_000_000
                existing = tree.get(item["path"])
                files.append(
                    {
                        "path": item["path"],
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": existing.oid if existing is not None and existing.lfs == lfs else None,
                    }
                )
            self._json({"files": files, "commitOid": repo.branches.get(unquote(groups["rev"]))})

        def route_lfs_batch(self, groups, body, query):
            self._repo(groups)
            request = json.loads(body)
            if request.get("operation") != "upload" or "basic" not in request.get("transfers", ["basic"]):
                raise _Response(400, "hub stub: only the basic LFS upload transfer is implemented")
            objects = []
            for obj in request["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if not stub.has_blob(obj["oid"]):
                    entry["actions"] = {
                        "upload": {"href": f"{stub.endpoint}/__lfs__/{obj['oid']}", "header": {}},
                        "verify": {"href": f"{stub.endpoint}/__lfs__/{obj['oid']}/verify", "header": {}},
                    }
                objects.append(entry)
            self._json({"transfer": "basic", "objects": objects})

        def route_lfs_upload(self, groups, body, query):
            if hashlib.sha256(body).hexdigest() != groups["oid"]:
                raise _Response(400, "hub stub: uploaded content does not match its sha256 oid")
            stub.put_blob(body)
            self._send(200)

        def route_lfs_verify(self, groups, body, query):
            request = json.loads(body)
            if not stub.has_blob(groups["oid"]) or len(stub.read_blob(groups["oid"])) != request.get("size"):
                raise _Response(400, "hub stub: LFS object missing or of the wrong size")
            self._json({"success": True})

        def route_commit(self, groups, body, query):
            repo = self._repo(groups)
            branch = unquote(groups["rev"])
            if branch not in repo.branches:
                raise _Response(404, f"Revision {branch} not found", "RevisionNotFound")
            with stub.lock:
                _, tree = self._tree(repo, branch)
                tree = dict(tree)
                summary = ""
                for line in body.splitlines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    key, value = item["key"], item["value"]
                    if key == "header":
                        summary = value.get("summary", "")
                    elif key == "file":
                        tree[value["path"]] = self._stored(base64.b64decode(value["content"]), lfs=False)
                    elif key == "lfsFile":
                        if not stub.has_blob(value["oid"]):
                            message = f"hub stub: LFS object {value['oid']} of {value['path']} was not uploaded"
                            raise _Response(422, message)
                        content = stub.read_blob(value["oid"])
                        tree[value["path"]] = StoredFile(value["oid"], len(content), True, git_blob_sha1(content))
                    elif key == "deletedFile":
                        if tree.pop(value["path"], None) is None:
                            raise _Response(404, "A file with this name doesn't exist", "EntryNotFound")
                    elif key == "deletedFolder":
                        prefix = value["path"].rstrip("/") + "/"
                        tree = {p: f for p, f in tree.items() if not p.startswith(prefix)}
                    else:
                        raise _Response(400, f"hub stub: unsupported commit operation {key!r}")
                sha = stub.new_commit(repo, branch, tree, summary)
            url_prefix = "datasets/" if repo.repo_type == "dataset" else ""
            self._json(
                {
                    "success": True,
                    "commitOid": sha,
                    "commitUrl": f"{stub.endpoint}/{url_prefix}{repo.repo_id}/commit/{sha}",
                    "pullRequestUrl": None,
                }
            )

        def route_repo_info(self, groups, body, query):
            repo = self._repo(groups)
            sha, tree = self._tree(repo, groups.get("rev") or "main")
            self._json(
                {
                    "id": repo.repo_id,
                    "modelId": repo.repo_id,
                    "sha": sha,
                    "private": False,
                    "disabled": False,
                    "gated": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": [{"rfilename": path} for path in sorted(tree)],
                    "lastModified": "2026-01-01T00:00:00.000Z",
                    "createdAt": "2026-01-01T00:00:00.000Z",
                }
            )

        def route_tree(self, groups, body, query):
            repo = self._repo(groups)
            _, tree = self._tree(repo, groups["rev"])
            prefix = (groups.get("path") or "").strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            entries, folders = [], set()
            for path in sorted(tree):
                if prefix and not path.startswith(prefix + "/"):
                    continue
                rest = path[len(prefix) + 1 :] if prefix else path
                if "/" in rest and not recursive:
                    folder = (prefix + "/" if prefix else "") + rest.split("/")[0]
                    if folder not in folders:
                        folders.add(folder)
                        entries.append({"type": "directory", "path": folder, "oid": "0" * 40, "size": 0})
                    continue
                entries.append(self._file_entry(path, tree[path]))
            self._json(entries)

        def route_paths_info(self, groups, body, query):
            repo = self._repo(groups)
            _, tree = self._tree(repo, groups["rev"])
            content_type = self.headers.get("Content-Type", "")
            if "json" in content_type:
                paths = json.loads(body).get("paths", [])
            else:
                paths = parse_qs(body.decode()).get("paths", [])
            self._json([self._file_entry(p, tree[p]) for p in paths if p in tree])

        def route_resolve(self, groups, body, query):
            repo = self._repo(groups)
            sha, tree = self._tree(repo, groups["rev"])
            stored = tree.get(groups["path"])
            if stored is None:
                raise _Response(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": sha})
            headers = {"X-Repo-Commit": sha, "ETag": f'"{stored.git_sha1}"', "Accept-Ranges": "none"}
            if stored.lfs:
                headers["X-Linked-Etag"] = f'"{stored.sha256}"'
                headers["X-Linked-Size"] = str(stored.size)
            self._send(200, stub.read_blob(stored.sha256), headers, content_type="application/octet-stream")

    return Handler
