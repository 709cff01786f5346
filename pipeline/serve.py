"""``doit serve``: serve the assembled site with the standard library's http.server (127.0.0.1 by default)."""
from __future__ import annotations

import functools
import http.server
from pathlib import Path

from .errors import WebsdError


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    # browsers refuse to stream-compile wasm served under another type
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
                      ".json": "application/json", ".bin": "application/octet-stream"}

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")  # a rebuilt site must never be mixed with a cached one
        super().end_headers()


def make_server(site_dir: Path, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False):
    if not (Path(site_dir) / "index.html").exists():
        raise WebsdError(f"no site at {site_dir}: run `doit` first")
    handler = functools.partial(SiteHandler, directory=str(site_dir))
    if quiet:
        handler = functools.partial(_QuietHandler, directory=str(site_dir))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise WebsdError(f"cannot listen on {host}:{port} ({e.strerror}); set web.port=<free port>") from None


class _QuietHandler(SiteHandler):
    def log_message(self, format, *args):
        pass


def serve(site_dir: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    server = make_server(site_dir, host, port)
    print(f"serving {site_dir} at http://{host}:{server.server_address[1]}/  (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def serve_stage(cfg) -> None:
    """``doit serve``: serves ``cache/site`` by path, so a build beside it (serve takes no tree lock) swaps in its
    new site atomically and the next request gets it; until then the last complete site is served."""
    from .layout import Layout

    serve(Layout.from_config(cfg).site_dir, cfg.web.host, cfg.web.port)
