"""Benchmark and reproducibility check of the Containerfile: image size, build times, and two site builds of one
commit in two fresh containers compared file by file.

    .venv/bin/python benchmarks/bench_container.py --tvm-mirror <apache/tvm mirror> \\
        [--ffi-mirror <apache/tvm-ffi mirror>] [--wheels <dir>] [--no-cache] [--builds 2]

Needs podman (and debootstrap when the base image is missing); runs as root. Containers cannot run here (podman run
fails on this machine's cgroups), so everything happens in build steps with ``--isolation chroot``:

1. the base ``localhost/debian-bookworm:base``: ``debootstrap --variant=minbase bookworm`` imported, unless it exists;
2. the build context: ``git archive HEAD`` of this checkout, so exactly the commit is built (uncommitted edits are not);
3. the ``toolchain`` image (``./setup.sh`` inside), tagged ``localhost/websd:toolchain``; ``--no-cache`` times a
   cold build, otherwise unchanged layers are reused;
4. the ``site`` target ``--builds`` times, each with a new ``SITE_BUILD`` (a fresh container from the toolchain
   image, empty ``cache/``), exported with ``-o type=local``; the trees are compared by sha256.

The mirrors (``--tvm-mirror``/``--ffi-mirror``, default ``WEBSD_TVM_MIRROR``/``WEBSD_TVM_FFI_MIRROR``) are passed as
build contexts; one that borrows objects from elsewhere (``objects/info/alternates``) is first cloned into a
self-contained temp mirror. ``--wheels`` (default ``PIP_FIND_LINKS`` when it is a folder) is pip's find-links;
``--certs`` (default ``/usr/local/share/ca-certificates`` when it has certificates) the extra CAs the image trusts.
Writes ``benchmarks/results/container-build.{json,md}``; the site trees and logs go to a temp folder, kept with
``--keep`` or when a step fails.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.fsutil import atomic_write, sha256_file, write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BASE = "localhost/debian-bookworm:base"
IMAGE = "localhost/websd:toolchain"
BUILD = ["podman", "build", "--isolation", "chroot"]


def run_timed(cmd: list[str], log: Path, cwd: Path | None = None) -> float:
    """Run ``cmd`` with its output in ``log`` (tail printed on failure); return wall seconds."""
    print(f"--- {' '.join(cmd)}  (log: {log})", flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        sys.exit(f"{tail}\nerror: {cmd[0]} {cmd[1]} failed (exit {proc.returncode}) after {seconds:.0f}s; "
                 f"see {log}")
    return round(seconds, 1)


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], check=False).returncode == 0


def make_base(work: Path) -> float | None:
    """Import a minbase bookworm as BASE unless it exists; return the seconds it took (None: it existed)."""
    if image_exists(BASE):
        return None
    if not shutil.which("debootstrap"):
        sys.exit(f"error: {BASE} is missing and debootstrap is not installed: apt-get install debootstrap")
    rootfs = work / "rootfs"
    start = time.perf_counter()
    run_timed(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)], work / "debootstrap.log")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(["podman", "import", "-", BASE], stdin=tar.stdout, capture_output=True, text=True,
                              check=False)
    tar.stdout.close()
    if tar.wait() != 0 or imported.returncode != 0:
        sys.exit(f"error: podman import of {rootfs} failed: {imported.stderr.strip()[-500:]}")
    shutil.rmtree(rootfs)
    return round(time.perf_counter() - start, 1)


def self_contained(mirror: Path, work: Path) -> Path:
    """``mirror`` itself, or a full clone of it when it borrows objects from another repository."""
    git_dir = subprocess.run(["git", "-C", str(mirror), "rev-parse", "--absolute-git-dir"], capture_output=True,
                             text=True, check=False)
    if git_dir.returncode != 0:
        sys.exit(f"error: {mirror} is not a git repository: pass a git mirror (git clone --mirror <url>)")
    if not (Path(git_dir.stdout.strip()) / "objects" / "info" / "alternates").exists():
        return Path(git_dir.stdout.strip())
    clone = work / f"{mirror.name}-{uuid.uuid4().hex[:8]}.git"
    print(f"--- {mirror} borrows objects (alternates): cloning it into {clone}", flush=True)
    subprocess.run(["git", "clone", "-q", "--mirror", "--no-hardlinks", str(mirror), str(clone)], check=True)
    return clone


def tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def compare(trees: list[dict[str, str]]) -> list[dict]:
    """Each file that is missing from a tree or differs between trees, with its hashes."""
    names = sorted(set().union(*trees))
    return [{"file": name, "sha256": [t.get(name) for t in trees]} for name in names
            if len({t.get(name) for t in trees}) > 1]


def git_head() -> tuple[str, bool]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.strip()
    return commit.stdout.strip(), bool(dirty)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tvm-mirror", type=Path, default=os.environ.get("WEBSD_TVM_MIRROR") or None)
    parser.add_argument("--ffi-mirror", type=Path, default=os.environ.get("WEBSD_TVM_FFI_MIRROR") or None)
    find_links = os.environ.get("PIP_FIND_LINKS", "")
    parser.add_argument("--wheels", type=Path, default=Path(find_links) if os.path.isdir(find_links) else None,
                        help="pip find-links folder for the image (default: PIP_FIND_LINKS when it is a folder)")
    local_cas = Path("/usr/local/share/ca-certificates")
    parser.add_argument("--certs", type=Path, default=local_cas if any(local_cas.glob("*.crt")) else None,
                        help="extra CA certificates (*.crt) for the image, e.g. a TLS-intercepting proxy's")
    parser.add_argument("--no-cache", action="store_true", help="rebuild the toolchain image from scratch")
    parser.add_argument("--builds", type=int, default=2, help="site builds to compare (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the site trees and logs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write container-build.{json,md}")
    args = parser.parse_args(argv)
    if not shutil.which("podman"):
        sys.exit("error: podman not found: apt-get install podman (and debootstrap for the base image)")
    if not args.tvm_mirror:
        sys.exit("error: no TVM mirror: pass --tvm-mirror or set WEBSD_TVM_MIRROR to a git mirror of apache/tvm")

    work = Path(tempfile.mkdtemp(prefix="websd-container-"))
    commit, dirty = git_head()
    result: dict = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores",
                    "commit": commit, "uncommitted_edits_not_built": dirty, "podman": subprocess.run(
                        ["podman", "--version"], capture_output=True, text=True, check=False).stdout.strip()}
    done = False
    try:
        result["base_seconds"] = make_base(work)
        ctx = work / "context"
        ctx.mkdir()
        archive = subprocess.Popen(["git", "archive", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(ctx)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            sys.exit("error: git archive HEAD failed: run the benchmark from a git checkout with a commit")

        contexts = [arg for name in ("wheels", "certs") if getattr(args, name)
                    for arg in ("--build-context", f"{name}={getattr(args, name)}")]
        image_cmd = [*BUILD, *contexts, "--target", "toolchain", "-t", IMAGE, *(["--no-cache"] * args.no_cache),
                     str(ctx)]
        result["image"] = {"seconds": run_timed(image_cmd, work / "image.log"), "cold": args.no_cache}
        size = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", IMAGE], capture_output=True,
                              text=True, check=True).stdout.strip()
        result["image"]["size_mb"] = round(int(size) / 1e6)

        contexts += ["--build-context", f"tvm={self_contained(args.tvm_mirror, work)}"]
        if args.ffi_mirror:
            contexts += ["--build-context", f"tvm-ffi={self_contained(args.ffi_mirror, work)}"]
        trees, builds = [], []
        for n in range(1, args.builds + 1):
            out = work / f"site-{n}"
            cmd = [*BUILD, *contexts, "--target", "site", "--build-arg", f"SITE_BUILD={uuid.uuid4().hex}",
                   "-o", f"type=local,dest={out}", str(ctx)]
            seconds = run_timed(cmd, work / f"site-{n}.log")
            trees.append(tree_hashes(out))
            builds.append({"seconds": seconds, "files": len(trees[-1]),
                           "mb": round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6, 1)})
            print(f"--- site build {n}: {builds[-1]}", flush=True)
        result["site_builds"] = builds
        result["differing_files"] = compare(trees) if len(trees) > 1 else None
        result["identical"] = result["differing_files"] == [] if len(trees) > 1 else None
        result["site_sha256"] = hashlib.sha256(json.dumps(trees[0], sort_keys=True).encode()).hexdigest() \
            if trees else None
        done = True
    finally:
        # the site-build layers hold a whole cache/ each: drop them (the tagged toolchain image stays)
        subprocess.run(["podman", "image", "prune", "-f"], capture_output=True, check=False)
        if args.keep or not done:
            print(f"kept {work} (site trees and logs)")
        else:
            shutil.rmtree(work, ignore_errors=True)

    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "container-build.json", result)
    img = result["image"]
    lines = ["### Containerfile: the image and site builds (`benchmarks/bench_container.py`)", "",
             (f"{result['when']}, {result['machine']}, {result['podman']}, commit `{commit[:12]}`"
              f"{' (with uncommitted edits, not built)' if dirty else ''}."), "",
             "| what | wall s | size |", "|---|---:|---|",
             f"| base image (debootstrap + import) | {result['base_seconds'] or 'existed'} | |",
             (f"| toolchain image ({'cold' if img['cold'] else 'layer cache allowed'}) | {img['seconds']} | "
              f"{img['size_mb']} MB |")]
    lines += [f"| site build {n} (fresh container, empty cache/) | {b['seconds']} | {b['files']} files, {b['mb']} MB |"
              for n, b in enumerate(result["site_builds"], 1)]
    if result["identical"] is not None:
        lines += ["", "Site trees byte-identical: " + ("yes" if result["identical"] else
                  "no: " + ", ".join(d["file"] for d in result["differing_files"]))]
    with atomic_write(args.results / "container-build.md") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if result["identical"] is not False else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
