"""``doit publish`` (pipeline/page/publish.py) against a real S3 server (SeaweedFS, tests/s3_server.py): what a
browser or CDN then gets from the bucket (Content-Type, Cache-Control), the manifest last, unchanged objects not sent
again, and immutable URLs never given other bytes. The page loading from the bucket is tests/e2e/test_publish_page.py.
"""
from __future__ import annotations

import json

import pytest

from pipeline.errors import WebsdError
from pipeline.page import publish
from tests.conftest import run_doit

FILES = {
    "index.html": b"<!doctype html><title>websd</title>",
    "src/ui.js": b"export const x = 1;\n",
    "style.css": b"body{}",
    "tvmjs.bundle.js": b"var tvmjs;",
    "model/unet.wasm": b"\0asm\1\0\0\0",
    "model/params/unet/params_shard_0.bin": bytes(range(256)) * 64,
    "model/params/unet/tensor-cache.json": b'{"records": []}',
    "model/manifest.json": b'{"files": {}}',
}


def make_site(root):
    for rel, data in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


@pytest.fixture
def env(s3_server, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


def test_headers_per_file():
    assert publish.content_type("model/unet.wasm") == "application/wasm"
    assert publish.content_type("src/ui.js") == "text/javascript"
    assert publish.content_type("model/manifest.json") == "application/json"
    assert publish.content_type("model/params/clip/params_shard_3.bin") == "application/octet-stream"
    assert publish.content_type("index.html") == "text/html"
    assert publish.cache_control("model/unet.wasm") == publish.cache_control("model/params/a/params_shard_0.bin") \
        == "public, max-age=31536000, immutable"
    for short in ("index.html", "model/manifest.json", "src/ui.js", "model/params/unet/tensor-cache.json"):
        assert publish.cache_control(short) == "no-cache"


def test_manifest_goes_last(tmp_path):
    files = publish.site_files(make_site(tmp_path / "site"))
    assert files[-1] == "model/manifest.json" and sorted(files) == sorted(FILES)
    (tmp_path / "site" / "model" / "manifest.json").unlink()
    with pytest.raises(WebsdError, match="build the site first"):
        publish.site_files(tmp_path / "site")


def test_publish_then_fetch_anonymously(env, tmp_path):
    site = make_site(tmp_path / "site")
    stats = publish.publish_site(site, "s3://site/demo")
    assert stats == {"uploaded": len(FILES), "unchanged": 0, "bytes": sum(map(len, FILES.values()))}
    for rel, data in FILES.items():
        status, headers, body = env.http_get("site", f"demo/{rel}")  # no credentials: what a visitor gets
        assert (status, body) == (200, data), rel
        assert headers["Content-Type"] == publish.content_type(rel), rel
        assert headers["Cache-Control"] == publish.cache_control(rel), rel
    # nothing changed: nothing sent; a changed page: only it
    assert publish.publish_site(site, "s3://site/demo")["uploaded"] == 0
    (site / "index.html").write_bytes(b"<!doctype html><title>websd 2</title>")
    again = publish.publish_site(site, "s3://site/demo")
    assert (again["uploaded"], again["unchanged"]) == (1, len(FILES) - 1)
    assert env.http_get("site", "demo/index.html")[2] == b"<!doctype html><title>websd 2</title>"


def test_immutable_url_never_gets_other_bytes(env, tmp_path):
    site = make_site(tmp_path / "site")
    publish.publish_site(site, "s3://site/demo")
    (site / "model" / "unet.wasm").write_bytes(b"\0asm\1\0\0\0 rebuilt")
    with pytest.raises(WebsdError, match="new prefix"):
        publish.publish_site(site, "s3://site/demo")
    assert env.http_get("site", "demo/model/unet.wasm")[2] == FILES["model/unet.wasm"]
    assert publish.publish_site(site, "s3://site/demo-2")["uploaded"] == len(FILES)


def test_wrong_credentials_is_one_line(env, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-4242")
    with pytest.raises(WebsdError) as err:
        publish.publish_site(make_site(tmp_path / "site"), "s3://site/demo")
    assert "check the AWS credentials" in str(err.value) and "wrong-secret-4242" not in str(err.value)


def test_doit_publish_needs_a_destination(tmp_path):
    res = run_doit("publish")
    assert res.returncode != 0 and res.executed == {"publish"}
    assert "publish needs a destination: set publish.remote=s3://bucket/prefix" in res.output


def test_doit_publish_uploads_the_site(env, tmp_path):
    """`doit publish` publishes the last complete site, like `doit serve` serves it (it builds nothing)."""
    import os

    from pipeline.config import load_config
    from pipeline.layout import Layout

    cfg = load_config(pyproject=None)
    site = Layout.from_config(cfg).site_dir
    make_site(site)
    res = run_doit("publish", "publish.remote=s3://site/by-doit", env={**os.environ})
    assert res.executed == {"publish"}, res.output
    assert res.returncode == 0, res.output
    assert f"publish: {len(FILES)} files uploaded" in res.output
    status, headers, body = env.http_get("site", "by-doit/model/manifest.json")
    assert status == 200 and json.loads(body) == {"files": {}}
