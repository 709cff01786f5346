"""Python side of the browser end-to-end test: serve a site directory, run tests/e2e/drive_page.cjs on it, and make
altered copies of a site (a tampered or a missing shard) without touching the build output."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path

from pipeline.page.serve import make_server

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "drive_page.cjs"
WEB = HERE.parents[1] / "web"
CHROMIUM = os.environ.get("WEBSD_CHROMIUM", "/usr/bin/chromium")


def missing_tools() -> str | None:
    """Why the browser test cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (the browser driver needs Node >= 20)"
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing: install Debian's chromium (setup.sh does)"
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        return "web/node_modules/playwright-core is missing: run `npm install` in web/"
    return None


def _recording(handler):
    """``handler`` (pipeline.page.serve's, a functools.partial of the class) that also logs every path it is asked for,
    answers 503 for the paths in the server's ``failing`` set (a dropped download), and serves the log at
    ``/__test/requests`` and takes ``/__test/fail?path=<site path>`` (none: stop failing) for the browser driver."""
    class Recording(handler.func):
        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/__test/requests":
                return self._reply(200, json.dumps(self.server.requests).encode())
            if url.path == "/__test/fail":
                self.server.failing = set(urllib.parse.parse_qs(url.query).get("path", []))
                return self._reply(200, b"[]")
            self.server.requests.append(url.path.lstrip("/"))
            if url.path.lstrip("/") in self.server.failing:
                return self._reply(503, b"[]")
            return super().do_GET()

        def _reply(self, status, body):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return functools.partial(Recording, *handler.args, **handler.keywords)


@contextlib.contextmanager
def serving(site_dir: Path, record: bool = False):
    """The site served by pipeline.page.serve on 127.0.0.1 at a free port; yields the base URL. ``record``: with the
    request log and failure switch of ``_recording``."""
    server = make_server(Path(site_dir), "127.0.0.1", 0, quiet=True)
    if record:
        server.RequestHandlerClass = _recording(server.RequestHandlerClass)
        server.requests, server.failing = [], set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def drive_page(url: str, work_dir: Path, runs: list[dict] = (), screenshot: Path | None = None,
               timeout_s: float = 1800, count_requests: bool = False) -> dict:
    """Load ``url`` in a fresh headless Chromium profile, make the images of ``runs`` and return the driver's report
    (see drive_page.cjs). ``count_requests`` (a ``serving(record=True)`` server): each run's ``requests``, the model
    files asked for while it ran, counted once the load's files are in the weight cache. Each run gets ``pixels`` (the VAE output, H x W x 3 float32 0..255; None for a run made
    through the form) and ``rgba`` (the canvas bytes, H x W x 4)."""
    import numpy as np

    work_dir = Path(work_dir)
    profile = work_dir / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir(parents=True)
    spec = {"url": url, "userDataDir": str(profile), "outDir": str(work_dir / "pixels"),
            "timeoutMs": int(timeout_s * 1000), "runs": list(runs), "countRequests": count_requests}
    if screenshot is not None:
        spec["screenshot"] = str(screenshot)
    spec_path = work_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    try:
        proc = subprocess.run(["node", str(DRIVER), str(spec_path)], capture_output=True, text=True,
                              timeout=timeout_s * (2 + len(spec["runs"])), stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(profile, ignore_errors=True)  # tens of MB of browser state, of no use afterwards
    if proc.returncode != 0:
        raise AssertionError(f"the browser driver failed (exit {proc.returncode}):\n{proc.stderr[-5000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for run in report["runs"]:
        shape = (run.get("height"), run.get("width"))
        run["pixels"] = (np.fromfile(run["pixelsFile"], dtype="<f4").reshape(*shape, 3)
                         if run.get("pixelsFile") else None)
        run["rgba"] = np.fromfile(run["rgbaFile"], dtype=np.uint8).reshape(*shape, 4) if run.get("rgbaFile") else None
    return report


def altered_site(site_dir: Path, dest: Path, corrupt: str | None = None, remove: str | None = None) -> Path:
    """A copy of ``site_dir`` at ``dest`` made of hard links to the original files (the build output is never
    written), with the file ``corrupt`` (a path inside the site) replaced by a copy with one byte flipped, and the
    file ``remove`` left out."""
    site_dir, dest = Path(site_dir), Path(dest)
    for src in site_dir.rglob("*"):
        rel = src.relative_to(site_dir).as_posix()
        if src.is_dir() or rel == remove:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel == corrupt:
            data = bytearray(src.read_bytes())
            data[len(data) // 2] ^= 0xFF
            target.write_bytes(bytes(data))
        else:  # a link, not a symlink: the server refuses files that resolve outside the site it serves
            try:
                os.link(src.resolve(), target)
            except OSError:
                shutil.copy2(src, target)
    for name in (corrupt, remove):
        if name is not None and not (site_dir / name).is_file():
            raise AssertionError(f"{name} is not a file of {site_dir}")
    return dest
