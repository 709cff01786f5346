"""pipeline.tokenizer: the CLIP tokenizer files are rebuilt offline and give Stable Diffusion's ids."""
from __future__ import annotations

import json

import pytest

from pipeline import tokenizer as tk
from pipeline.errors import WebsdError

ASTRONAUT = "a photo of an astronaut riding a horse"
ASTRONAUT_IDS = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]


def test_byte_table_is_a_bijection_keeping_printable_bytes():
    table = tk._bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"  # space -> chr(256 + 32)
    assert list(table)[:3] == [ord("!"), ord('"'), ord("#")]  # CLIP numbers printable bytes first


def test_vocab_and_merges_have_clip_sizes_and_order():
    vocab, merges = tk.clip_vocab_and_merges()
    assert len(vocab) == tk.VOCAB_SIZE == 49408
    assert len(merges) == tk.N_MERGES
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab[tk.BOS] == 49406 and vocab[tk.EOS] == 49407
    assert vocab["".join(merges[0])] == 512  # first merge follows the 2 x 256 byte symbols


def test_known_ids_padding_and_truncation():
    tok = tk.clip_tokenizer()
    short, long_ = tk.encode_prompts(tok, [ASTRONAUT, "horse " * 200])
    assert short[:10] == ASTRONAUT_IDS and short[10:] == [49407] * 67  # SD v1.5 pads with eos
    assert len(long_) == 77 and long_[0] == 49406 and long_[-1] == 49407 and long_[-2] != 49407


def test_write_clip_tokenizer_files_load_and_replace_old_dir(tmp_path):
    from tokenizers import Tokenizer

    out = tmp_path / "tokenizer"
    out.mkdir()
    (out / "stale.txt").write_text("from an older build")
    tk.write_clip_tokenizer(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "merges.txt", "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    assert Tokenizer.from_file(str(out / "tokenizer.json")).encode(ASTRONAUT).ids == ASTRONAUT_IDS
    merges = (out / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + tk.N_MERGES
    assert len(json.loads((out / "vocab.json").read_text(encoding="utf-8"))) == tk.VOCAB_SIZE
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["pad_token"] == tk.EOS and config["model_max_length"] == 77
    # The folder is a tokenizer folder transformers (and so diffusers) loads as is.
    from transformers import CLIPTokenizer

    again = CLIPTokenizer.from_pretrained(str(out))
    assert again(ASTRONAUT, padding="max_length", max_length=77)["input_ids"] == ASTRONAUT_IDS + [49407] * 67


def test_missing_open_clip_names_the_fix(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WebsdError, match="pip install --no-deps open-clip-torch"):
        tk.bpe_vocab_gz()


def test_wrong_merge_file_is_refused(tmp_path):
    import gzip

    bad = tmp_path / "bpe.txt.gz"
    bad.write_bytes(gzip.compress(b"header\na b\n"))
    with pytest.raises(WebsdError, match="not CLIP's BPE merge list"):
        tk.clip_vocab_and_merges(bad)


def test_write_from_a_tokenizer_folder_gives_the_same_files(tmp_path):
    tk.write_clip_tokenizer(tmp_path / "a")
    tk.write_clip_tokenizer(tmp_path / "b", source=tmp_path / "a")
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_folder_without_merges_is_refused(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(WebsdError, match="merges.txt is missing"):
        tk.write_clip_tokenizer(tmp_path / "out", source=tmp_path)
