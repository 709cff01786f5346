"""requirements.lock (the constraints ./setup.sh passes to every pip install) agrees with the pins it must not
contradict, or a fresh setup fails with pip's ResolutionImpossible."""
import re
import tomllib

from pipeline.config import load_config
from pipeline.toolchain.versions import wheel_requirement
from tests.conftest import ROOT


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^\s;#]+)\s*\\?\s*", line)
        if m:
            pins[re.sub(r"[-_.]+", "-", m[1]).lower()] = m[2]
    return pins


def test_lock_agrees_with_pyproject_setup_and_the_tvm_wheel(tmp_path):
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _pins(project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds])
    wanted |= _pins(wheel_requirement(load_config(env={}, user_config=tmp_path / 'none.toml').tvm.version).split())
    wanted |= _pins(re.findall(r"pip install (?:--no-deps )?(\S+==\S+)", (ROOT / "setup.sh").read_text()))
    assert wanted, "found no pins to check"
    wrong = {name: (ver, lock.get(name)) for name, ver in wanted.items() if lock.get(name) != ver}
    assert not wrong, f"requirements.lock disagrees (pin, lock): {wrong}; regenerate it as its header says"


def test_every_locked_package_has_a_sha256_and_setup_checks_them():
    text = (ROOT / "requirements.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z])", "\n".join(l for l in text.splitlines() if not l.startswith("#")).strip())
    assert len(entries) > 50
    unhashed = [e.split()[0] for e in entries if not re.search(r"--hash=sha256:[0-9a-f]{64}\b", e)]
    assert not unhashed, f"requirements.lock entries without a sha256: {unhashed}"
    setup = (ROOT / "setup.sh").read_text()
    assert "--require-hashes --no-deps -r requirements.lock" in setup
    assert re.search(r"\bnpm ci\b", setup) and not re.search(r"\bnpm install\b", setup)
    # npm ci installs exactly the lock, each package checked against its integrity hash
    lock = __import__("json").loads((ROOT / "web" / "package-lock.json").read_text())
    packages = {k: v for k, v in lock["packages"].items() if k and not v.get("link")}
    assert packages and all(v.get("integrity", "").startswith("sha512-") for v in packages.values())
