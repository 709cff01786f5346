"""``doit publish``: upload the last complete site (``cache/site``) to ``publish.remote`` (s3://bucket/prefix) so that
the bucket, or a CDN in front of it, serves it as it is.

- Content-Type per extension (a browser refuses to stream-compile wasm under another type).
- Cache-Control: the model's ``.wasm`` and ``.bin`` shards are immutable for a year: their bytes are named by the
  manifest's sha256, and publish never changes the content at such a URL (a different file at the same path stops
  it: publish that site to a new prefix). Everything else (index.html, the manifest, the page's JS) is ``no-cache``:
  revalidated on every load, so a new publish is seen at once.
- Order: every other file first, ``model/manifest.json`` last, so a visitor never gets a manifest that names
  missing files (files of the previous publish are not deleted: a visitor mid-load may still be reading them).
- An object whose stored sha256 (metadata) and size already match is not uploaded again.

Endpoint and credentials are the standard AWS ones (see pipeline.remote_cache).
"""
from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from ..config import Config
from ..errors import WebsdError
from ..fsutil import sha256_file
from ..layout import Layout

CONTENT_TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
                 ".json": "application/json", ".bin": "application/octet-stream", ".html": "text/html",
                 ".css": "text/css", ".txt": "text/plain", ".png": "image/png"}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
MANIFEST = "model/manifest.json"


def content_type(rel: str) -> str:
    ext = os.path.splitext(rel)[1].lower()
    return CONTENT_TYPES.get(ext) or mimetypes.guess_type(rel)[0] or "application/octet-stream"


def immutable(rel: str) -> bool:
    """Model files the manifest names by content (their sha256): the .wasm modules and the weight shards."""
    return rel.startswith("model/") and rel.endswith((".wasm", ".bin"))


def cache_control(rel: str) -> str:
    return IMMUTABLE if immutable(rel) else REVALIDATE


def site_files(site: Path) -> list[str]:
    """Every file of the site, relative to it, the manifest last."""
    files = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    if MANIFEST not in files:
        raise WebsdError(f"{site} has no {MANIFEST}: build the site first (`doit site`)")
    files.remove(MANIFEST)
    return [*files, MANIFEST]


def publish_site(site: Path, url: str, s3=None, log=print) -> dict:
    """Upload ``site`` to ``url``; returns counts and bytes."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ..remote_cache import client, describe, parse_url, transfer_config

    site = Path(os.path.realpath(site))  # one version of the site, even if a build switches the link meanwhile
    bucket, prefix = parse_url(url)
    s3 = s3 or client()
    stats = {"uploaded": 0, "unchanged": 0, "bytes": 0}
    for rel in site_files(site):
        path, key = site / rel, "/".join(p for p in (prefix, rel) if p)
        sha, size = sha256_file(path), path.stat().st_size
        try:
            try:
                head = s3.head_object(Bucket=bucket, Key=key)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
                head = None
            if head and head.get("Metadata", {}).get("sha256") == sha and head["ContentLength"] == size:
                stats["unchanged"] += 1
                continue
            if head and immutable(rel):
                raise WebsdError(f"{url}/{rel} already holds other content under a one-year immutable cache header "
                                 f"(browsers and CDNs keep it): publish this site to a new prefix, e.g. "
                                 f"publish.remote={url.rstrip('/')}-2")
            s3.upload_file(str(path), bucket, key, ExtraArgs={
                "ContentType": content_type(rel), "CacheControl": cache_control(rel), "Metadata": {"sha256": sha}},
                Config=transfer_config())
        except (ClientError, BotoCoreError) as e:
            raise WebsdError(f"publish to {url} failed at {rel}: {describe(e)}") from None
        stats["uploaded"] += 1
        stats["bytes"] += size
    log(f"publish: {stats['uploaded']} files uploaded ({stats['bytes'] / 1e6:.1f} MB), {stats['unchanged']} "
        f"unchanged, to {url}")
    return stats


def run(cfg: Config) -> dict:
    if not cfg.publish.remote:
        raise WebsdError("publish needs a destination: set publish.remote=s3://bucket/prefix (doit publish "
                         "publish.remote=..., WEBSD_PUBLISH_REMOTE or the config files)")
    site = Layout.from_config(cfg).site_dir
    if not site.exists():
        raise WebsdError(f"no site at {site}: build it first (`doit site`)")
    return publish_site(site, cfg.publish.remote)
