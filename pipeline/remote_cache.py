"""A content-addressed build cache on S3-compatible storage (``cache.remote``, ``cache.remote_mode``).

doit decides first: only a stage it is about to run is looked up. The stage's key is a sha256 over everything its
staleness depends on (its inputs' and derived code files' sha256, its config keys and the path keys, its
fingerprint - e.g. the TVM tree -, the versions of the tools that decide its bytes). Under ``<prefix>/``:

    blobs/<sha256>          one object per output file, named by its content (shared by every entry holding it)
    entries/<key>.json      the entry: each output file's path (relative to paths.cache), size, sha256, mode

A hit downloads every blob into a scratch folder, checks its size and sha256 against the entry, and renames each of
the stage's output roots into place (the stage's last output last, as the stage itself writes it). A miss runs the
stage; in ``read-write`` the blobs are uploaded first and the entry last, so a reader never sees half an entry. Two
writers of one key write the same names (blobs by content; the entry object is replaced whole by S3), so they are
safe. Anything wrong with the remote - unreachable, refused credentials, a missing or truncated object - is one
``warning:`` line and a normal local build. Transfers stream through boto3's managed transfers (flat memory).

Endpoint and credentials come from the standard AWS environment and files (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_PROFILE, ~/.aws/config, ...) through boto3; nothing here prints them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from .config import PROJECT_ROOT, Config
from .errors import WebsdError
from .fsutil import atomic_path, scratch_dir, sha256_file

FORMAT = 2  # part of every key: a change of the entry format or key recipe starts a new key space
# packages whose version changes the bytes a stage writes (torch.export, diffusers' models, TVM's compiler)
PACKAGES = ("torch", "diffusers", "transformers", "tokenizers", "safetensors", "numpy", "apache-tvm",
            "apache-tvm-ffi")


class RemoteError(Exception):
    """Anything wrong with the remote: reported as one warning line, then the stage builds locally."""


# ---------------------------------------------------------------------------------------------------------------
# what this run moved (the summary table reads it)

@dataclass
class Transfer:
    status: str  # "hit" (installed from the remote), "stored" (uploaded after a local build), "miss", "warning"
    down: int = 0
    up: int = 0


TRANSFERS: dict[str, Transfer] = {}


# ---------------------------------------------------------------------------------------------------------------
# the store

def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix")."""
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise WebsdError(f"config cache.remote must look like s3://bucket/prefix; got {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


def client():
    """A boto3 S3 client from the standard AWS environment and config files; few retries and short connect
    timeouts, so an unreachable remote costs seconds, not minutes."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.session.Session().client("s3", config=BotoConfig(
        connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"}))


def describe(exc: BaseException) -> str:
    """A short reason for a remote failure: the S3 error code or the exception's class, never a credential."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "?")
        hint = {"InvalidAccessKeyId": "check the AWS credentials", "SignatureDoesNotMatch": "check the AWS credentials",
                "AccessDenied": "check the AWS credentials and the bucket policy",
                # a HEAD request's refusal has no body: only the HTTP status
                "403": "access denied: check the AWS credentials and the bucket policy",
                "Forbidden": "access denied: check the AWS credentials and the bucket policy",
                "NoSuchBucket": "create the bucket or fix cache.remote"}.get(code)
        return f"{code}{f' ({hint})' if hint else ''}"
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
    if isinstance(exc, RemoteError):
        return str(exc)
    return type(exc).__name__


def transfer_config():
    """Streaming in 8 MB parts, 4 at a time: memory stays near 32 MB of buffers whatever a file's size."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4)


class Store:
    """One ``s3://bucket/prefix``: blobs by content, entries by key."""

    def __init__(self, url: str, s3=None, progress: Callable[[int], None] | None = None):
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        self.s3 = s3 or client()
        self.progress = progress  # called with each chunk's byte count while a blob streams (either way)
        self.transfer = transfer_config()

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def blob_key(self, sha256: str) -> str:
        return self._key("blobs", sha256)

    def entry_key(self, key: str) -> str:
        return self._key("entries", f"{key}.json")

    def get_entry(self, key: str) -> dict | None:
        """The entry of ``key``, None when there is none; a malformed one raises RemoteError."""
        from botocore.exceptions import ClientError

        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.entry_key(key))["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        try:
            entry = json.loads(body)
            assert entry["format"] == FORMAT and entry["key"] == key
            for f in entry["files"]:
                assert isinstance(f["path"], str) and isinstance(f["size"], int) and len(f["sha256"]) == 64
            assert all(isinstance(p, str) for p in [*entry["roots"], *entry.get("dirs", [])])
        except (ValueError, KeyError, TypeError, AssertionError):
            raise RemoteError(f"entry {key[:12]} is malformed") from None
        return entry

    def blob_state(self, sha256: str) -> tuple[int, str] | None:
        """The stored size and recorded sha256 (object metadata) of a blob, None when absent."""
        from botocore.exceptions import ClientError

        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=self.blob_key(sha256))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return head["ContentLength"], head.get("Metadata", {}).get("sha256", "")

    def download_blob(self, sha256: str, size: int, dest: Path) -> None:
        """Stream a blob to ``dest`` and check it; a wrong size or sha256 raises RemoteError."""
        self.s3.download_file(self.bucket, self.blob_key(sha256), str(dest), Callback=self.progress,
                            Config=self.transfer)
        got = dest.stat().st_size
        if got != size:
            raise RemoteError(f"object {sha256[:12]} has {got} bytes, the entry says {size} (truncated?)")
        if sha256_file(dest) != sha256:
            raise RemoteError(f"object {sha256[:12]} does not match its sha256 (corrupt)")

    def upload_blob(self, path: Path, sha256: str, size: int) -> int:
        """Upload one file unless a blob of that size, written by an upload of that content, is already there (a
        truncated or replaced object is uploaded again: that repairs the entries naming it); returns bytes sent."""
        if self.blob_state(sha256) == (size, sha256):
            return 0
        self.s3.upload_file(str(path), self.bucket, self.blob_key(sha256), ExtraArgs={"Metadata": {"sha256": sha256}},
                            Callback=self.progress, Config=self.transfer)
        return size

    def put_entry(self, entry: dict) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.entry_key(entry["key"]), ContentType="application/json",
                           Body=json.dumps(entry, indent=1, sort_keys=True).encode())


# ---------------------------------------------------------------------------------------------------------------
# the key

def _where(path: Path, cache_dir: Path) -> str:
    """A path as the key sees it: relative to the cache, the Python environment (a file of an installed package)
    or the project - the same in every clone wherever it lives -, else absolute."""
    path = Path(path).absolute()
    for base, tag in ((cache_dir, "cache"), (Path(sys.prefix), "python"), (PROJECT_ROOT, "project")):
        try:
            return f"{tag}:{path.relative_to(base)}"
        except ValueError:
            continue
    return str(path)


_tool_versions: dict[str, str] = {}


def tool_version(tool: str) -> str:
    """The version line of a command-line tool that decides a stage's bytes (``REMOTE_CACHE_TOOLS``)."""
    if tool not in _tool_versions:
        try:
            out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60).stdout
            _tool_versions[tool] = out.strip().splitlines()[0] if out.strip() else "unknown"
        except (OSError, subprocess.SubprocessError):
            _tool_versions[tool] = "missing"
    return _tool_versions[tool]


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = ""
    return found


_sha256_memo: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    """sha256 of a file, remembered for this process by (path, mtime, size): the weights of SD v1.5 (GBs) are an
    input of several stages."""
    st = os.stat(path)
    memo_key = (str(path), st.st_mtime_ns, st.st_size)
    if memo_key not in _sha256_memo:
        _sha256_memo[memo_key] = sha256_file(path)
    return _sha256_memo[memo_key]


def stage_key(task: str, sub: str | None, tracked: list[Path], config: dict, fingerprint: object,
              tools: tuple[str, ...], cache_dir: Path, roots: list[Path] = ()) -> str:
    """The remote-cache key of one stage run (see module doc). ``roots``, the output paths relative to the cache,
    stand for the config keys those paths encode (model, dtype, size, TVM; pipeline.layout), as they do for doit."""
    files = {_where(Path(p), cache_dir): _sha256(p) if Path(p).is_file() else "missing" for p in tracked}
    recipe = {"format": FORMAT, "task": task, "sub": sub, "files": files, "config": config,
              "outputs": [_where(Path(r), cache_dir) for r in roots],
              "fingerprint": fingerprint, "python": sys.version.split()[0], "packages": package_versions(),
              "tools": {t: tool_version(t) for t in tools}}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# outputs <-> entries

def _walk(root: Path) -> list[Path]:
    """The regular files under an output root (itself when a file); a link or special file is refused."""
    if root.is_symlink() or not (root.is_file() or root.is_dir()):
        raise RemoteError(f"{root.name} is not a plain file or folder: not cached")
    if root.is_file():
        return [root]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                raise RemoteError(f"{p} is a link or special file: not cached")
            files.append(p)
    return files


def describe_outputs(roots: list[Path], cache_dir: Path) -> list[dict]:
    """Each output file: path relative to the cache, size, sha256, mode bits."""
    out = []
    for root in roots:
        for p in _walk(root):
            st = p.stat()
            out.append({"path": str(p.relative_to(cache_dir)), "size": st.st_size, "sha256": _sha256(p),
                        "mode": stat.S_IMODE(st.st_mode)})
    return out


def _root_of(rel: str, roots: list[str]) -> str:
    for r in roots:
        if rel == r or rel.startswith(r + "/"):
            return r
    raise RemoteError(f"entry file {rel} lies outside the stage's outputs")


def install(store: Store, entry: dict, roots: list[Path], cache_dir: Path) -> int:
    """Download, check and install an entry's files in place of the stage's output roots; returns bytes moved.

    Everything is downloaded and checked before anything is replaced: a failure leaves the outputs as they were."""
    rel_roots = [str(r.relative_to(cache_dir)) for r in roots]
    if sorted(entry["roots"]) != sorted(rel_roots):
        raise RemoteError("entry has other output roots than this stage (stale entry format)")
    moved = 0
    with scratch_dir(cache_dir, ".remote-cache-") as tmp:
        staged = tmp / "tree"
        for path in [f["path"] for f in entry["files"]] + entry.get("dirs", []):
            if Path(path).is_absolute() or ".." in Path(path).parts:
                raise RemoteError(f"entry names an unsafe path {path}")
            _root_of(path, rel_roots)
        for f in entry["files"]:
            rel = Path(f["path"])
            dest = staged / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            store.download_blob(f["sha256"], f["size"], dest)
            os.chmod(dest, f.get("mode", 0o644) & 0o777)
            moved += f["size"]
        for d in entry.get("dirs", []):
            (staged / d).mkdir(parents=True, exist_ok=True)
        for root, rel in zip(roots, rel_roots):  # in the stage's order: its last output (a stamp) last
            src = staged / rel
            if not src.exists():
                raise RemoteError(f"entry has nothing for {rel}")
            with atomic_path(root) as work:
                os.replace(src, work)
    for f in entry["files"]:  # checked above: later stages reading them as inputs need not hash GBs again
        st = os.stat(cache_dir / f["path"])
        _sha256_memo[(str(cache_dir / f["path"]), st.st_mtime_ns, st.st_size)] = f["sha256"]
    return moved


def upload(store: Store, key: str, task: str, roots: list[Path], cache_dir: Path) -> int:
    """Upload a finished stage's outputs, then its entry; returns bytes sent."""
    files = describe_outputs(roots, cache_dir)
    dirs = sorted({str(Path(dp).relative_to(cache_dir)) for r in roots if r.is_dir() for dp, _, _ in os.walk(r)})
    sent = 0
    for f in files:
        sent += store.upload_blob(cache_dir / f["path"], f["sha256"], f["size"])
    store.put_entry({"format": FORMAT, "key": key, "task": task, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                     time.gmtime()), "roots": [str(r.relative_to(cache_dir)) for r in roots], "files": files,
                     "dirs": dirs})
    return sent


# ---------------------------------------------------------------------------------------------------------------
# the doit action

@dataclass
class StagePlan:
    """What the cache needs to know of one stage task (dodo.py builds it from the stage record)."""
    task: str
    sub: str | None
    tracked: Callable[[], list[Path]]
    config: Callable[[], dict]
    fingerprint: Callable[[], object]
    roots: Callable[[], list[Path]]  # the stage's output roots (its ``cleans``), in the order it writes them
    tools: tuple[str, ...] = ()


def bad_entry(exc: BaseException) -> bool:
    """Whether a failed lookup was the entry's fault (malformed, an object missing, truncated or corrupt), which a
    read-write build repairs by storing its result, rather than the remote's (unreachable, credentials refused)."""
    from botocore.exceptions import ClientError

    if isinstance(exc, RemoteError):
        return True
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey")


def warn(task: str, url: str, what: str, exc: BaseException) -> None:
    print(f"warning: {task}: remote cache {url}: {what}: {describe(exc)}; building locally", file=sys.stderr,
          flush=True)


def cached(action: Callable, plan: StagePlan, cfg: Config, store_factory: Callable[[str], Store] = Store) -> Callable:
    """Wrap a doit action: look the stage up in the remote cache first; on a miss run it and (read-write) store it."""
    mode, url = cfg.cache.remote_mode, cfg.cache.remote
    if mode == "off" or not url:
        return action
    cache_dir = cfg.paths.cache_dir

    def run_cached():
        try:
            roots = [Path(r) for r in plan.roots()]
            if not roots:
                return action()
            key = stage_key(plan.task, plan.sub, plan.tracked(), plan.config(), plan.fingerprint(), plan.tools,
                            cache_dir, roots)
        except RemoteError as e:
            print(f"warning: {plan.task}: remote cache: {e}", file=sys.stderr)
            return action()
        store = None
        try:
            store = store_factory(url)
            entry = store.get_entry(key)
            if entry is not None:
                moved = install(store, entry, roots, cache_dir)
                TRANSFERS[plan.task] = Transfer("hit", down=moved)
                print(f"{plan.task}: from the remote cache ({moved / 1e6:.1f} MB)", flush=True)
                return None
            TRANSFERS[plan.task] = Transfer("miss")
        except Exception as e:  # noqa: BLE001 - any remote failure: one line, then the normal build
            warn(plan.task, url, "lookup failed", e)
            TRANSFERS[plan.task] = Transfer("warning")
            if not bad_entry(e):
                store = None  # unreachable or refused: do not try again to upload
        result = action()
        if result is not None or mode != "read-write" or store is None:
            return result  # a failed stage stores nothing
        try:
            TRANSFERS[plan.task] = Transfer("stored", up=upload(store, key, plan.task, roots, cache_dir))
        except Exception as e:  # noqa: BLE001 - the local build stands; the remote just lacks this entry
            print(f"warning: {plan.task}: remote cache {url}: upload failed: {describe(e)}; the local build is kept",
                  file=sys.stderr, flush=True)
            TRANSFERS[plan.task] = Transfer("warning")
        return None

    run_cached.__name__ = getattr(action, "__name__", "stage")
    return run_cached
