"""``doit serve``'s handler: files inside the site only, no listings, and the site symlink resolved per request."""
import http.client
import os
import threading

import pytest

from pipeline.fsutil import publish_versioned
from pipeline.page.serve import make_server


@pytest.fixture
def served(tmp_path):
    site = tmp_path / "cache" / "site"
    with publish_versioned(site) as work:
        (work / "index.html").write_text("one")
        (work / "model").mkdir()
        (work / "model" / "manifest.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("outside")
    server = make_server(site, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield site, server.server_address[1]
    server.shutdown()
    server.server_close()


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_serves_the_sites_files_and_nothing_else(served, tmp_path):
    site, port = served
    assert get(port, "/index.html") == (200, b"one")
    assert get(port, "/model/manifest.json") == (200, b"{}")
    assert get(port, "/")[0] == 200  # the folder's index.html
    # no listing of a folder without index.html
    status, body = get(port, "/model/")
    assert status == 404 and b"manifest.json" not in body
    # a symlink inside the site to a file outside it, and traversal forms
    os.symlink(tmp_path / "secret.txt", os.path.realpath(site) + "/leak.txt")
    for path in ("/leak.txt", "/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "//../../secret.txt"):
        status, body = get(port, path)
        assert status == 404 and b"outside" not in body, path


def test_each_request_gets_the_version_the_link_names_now(served):
    site, port = served
    assert get(port, "/index.html") == (200, b"one")
    with publish_versioned(site) as work:
        (work / "index.html").write_text("two")
    assert get(port, "/index.html") == (200, b"two")
