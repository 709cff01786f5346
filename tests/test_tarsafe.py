import io
import tarfile

import pytest

from pipeline.errors import WebsdError
from pipeline.tarsafe import extract_all


def _archive(path, names):
    with tarfile.open(path, "w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"ok"))
    return path


@pytest.mark.parametrize("has_filter", [True, False], ids=["data-filter", "python-before-3.11.4"])
def test_extracts_plain_members_and_refuses_escapes(tmp_path, monkeypatch, has_filter):
    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    with tarfile.open(_archive(tmp_path / "good.tar", ["pkg/a.txt", "pkg/sub/b.txt"])) as tar:
        extract_all(tar, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "sub" / "b.txt").read_text() == "ok"
    with tarfile.open(_archive(tmp_path / "bad.tar", ["pkg/a.txt", "../escape.txt"])) as tar, \
            pytest.raises((WebsdError, tarfile.FilterError)):
        extract_all(tar, tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()
