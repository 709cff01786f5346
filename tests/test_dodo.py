"""dodo.py's user-facing behaviour that needs no build: one-line errors for a bad model, `serve` beside a build."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from conftest import ROOT, run_doit


def test_a_model_folder_that_does_not_exist_is_one_line(tmp_path):
    res = run_doit("list", "model.name=/no/such/dir")
    assert res.returncode != 0
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[-1].startswith("error: model.name '/no/such/dir' is neither"), res.output
    assert "Traceback" not in res.output


def test_a_model_folder_without_a_component_is_one_line(tmp_path):
    folder = tmp_path / "model"
    for component in ("text_encoder", "unet"):
        (folder / component).mkdir(parents=True)
        (folder / component / "config.json").write_text("{}")
    res = run_doit("weights", f"model.name={folder}")
    assert res.returncode != 0 and "Traceback" not in res.output
    assert res.output.strip().splitlines()[-1] == (f"error: diffusers folder {folder} has no vae/config.json; point "
                                                   "model.name at a folder with text_encoder/, unet/ and vae/ "
                                                   "(save_pretrained layout)")


def test_serve_runs_beside_a_build(tmp_path):
    """`doit serve` takes no tree lock: a build started beside it runs instead of waiting."""
    site = tmp_path / "cache" / "site"
    site.mkdir(parents=True)
    (site / "index.html").write_text("<p>last complete site</p>")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WEBSD_PATHS_CACHE": str(tmp_path / "cache")}
    server = subprocess.Popen([sys.executable, "-m", "doit", "serve", f"web.port={port}"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        build = run_doit("tokenizer", env={**env, "WEBSD_LOCK_WAIT": "0"}, timeout=300)
        assert build.returncode == 0 and "another doit is running" not in build.output, build.output
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as r:
            assert b"last complete site" in r.read()
    finally:
        server.terminate()
        server.wait(timeout=30)
