"""``doit serve``: serve the assembled site with the standard library's http.server (127.0.0.1 by default).

``cache/site`` is a symlink that each site build switches to a new version (pipeline.fsutil.publish_versioned):
the handler resolves it once per request, so a request is answered from one whole version. Only regular files
inside that version are served: no directory listings, and nothing that resolves outside it (a symlink out, ``..``).
"""
from __future__ import annotations

import functools
import http.server
import os
import socket
from pathlib import Path

from ..errors import WebsdError


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    # browsers refuse to stream-compile wasm served under another type
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
                      ".json": "application/json", ".bin": "application/octet-stream"}

    def __init__(self, *args, site: str, **kwargs):
        self.site = site
        super().__init__(*args, directory=site, **kwargs)

    def translate_path(self, path: str) -> str:
        # this request's version of the site, resolved once per request (send_head resets it)
        root = self.directory = self.root = getattr(self, "root", None) or os.path.realpath(self.site)
        full = os.path.realpath(super().translate_path(path))
        self.outside = full != root and not full.startswith(root + os.sep)
        return full

    def send_head(self):
        self.root = None
        self.translate_path(self.path)
        if self.outside:
            self.send_error(404, "File not found")
            return None
        return super().send_head()

    def list_directory(self, path):
        self.send_error(404, "File not found")
        return None

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")  # a rebuilt site must never be mixed with a cached one
        super().end_headers()


class _QuietHandler(SiteHandler):
    def log_message(self, format, *args):
        pass


def make_server(site_dir: Path, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False):
    if not (Path(site_dir) / "index.html").exists():
        raise WebsdError(f"no site at {site_dir}: run `doit` first")
    handler = functools.partial(_QuietHandler if quiet else SiteHandler, site=str(site_dir))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except (OSError, OverflowError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        if isinstance(e, socket.gaierror):
            raise WebsdError(f"cannot listen on {host}:{port}: unknown host ({reason}); set web.host to an "
                             f"address of this machine, e.g. 127.0.0.1") from None
        raise WebsdError(f"cannot listen on {host}:{port} ({reason}); set web.port=<free port>") from None


def serve(site_dir: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    server = make_server(site_dir, host, port)
    print(f"serving {site_dir} at http://{host}:{server.server_address[1]}/  (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def run(cfg) -> None:
    """``doit serve``: serves ``cache/site``, resolved per request, so a build beside it (serve takes no tree lock)
    switches in its new site in one step and the next request gets it; until then the last complete site is
    served."""
    from ..layout import Layout

    serve(Layout.from_config(cfg).site_dir, cfg.web.host, cfg.web.port)
