"""pipeline.page.tokenizer: the CLIP tokenizer files are rebuilt offline and give Stable Diffusion's ids."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from pipeline.page import tokenizer as tk
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


# --- a model's own tokenizer/ folder, in either layout transformers has saved ---------------------------------------

PROMPTS = [ASTRONAUT, "Hello, World! 3.14 naïve café 🚀", "  A  PAINTING of the Eiffel-Tower,\t4k, trending on ArtStation "]


def _old_layout(clip: Path, folder: Path) -> None:
    """vocab.json + merges.txt, as transformers < 5 (and many diffusers models on the hub) saved it."""
    import shutil

    folder.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(clip / name, folder / name)


def _tokenizer_json_layout(clip: Path, folder: Path, string_merges: bool = False) -> None:
    """Only tokenizer.json + tokenizer_config.json, as current transformers saves it; merges as [a, b] pairs
    (tokenizers >= 0.20) or, with ``string_merges``, as "a b" strings (older tokenizers)."""
    from transformers import CLIPTokenizer

    CLIPTokenizer.from_pretrained(str(clip)).save_pretrained(str(folder), legacy_format=False)
    for name in ("vocab.json", "merges.txt"):  # transformers 4.x writes them too; this layout must not have them
        (folder / name).unlink(missing_ok=True)
    path = folder / "tokenizer.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    pairs = [m.split(" ") if isinstance(m, str) else m for m in doc["model"]["merges"]]
    doc["model"]["merges"] = [" ".join(m) for m in pairs] if string_merges else pairs
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("make", [
    _old_layout,
    _tokenizer_json_layout,
    functools.partial(_tokenizer_json_layout, string_merges=True),
], ids=["vocab+merges", "tokenizer.json", "tokenizer.json-string-merges"])
def test_write_from_either_folder_layout_tokenizes_like_clip(tmp_path, make):
    from tokenizers import Tokenizer
    from transformers import CLIPTokenizer

    clip = tmp_path / "clip"
    tk.write_clip_tokenizer(clip)  # OpenAI CLIP's files, from open-clip's merge list
    source = tmp_path / "model" / "tokenizer"
    source.parent.mkdir()
    make(clip, source)
    out = tmp_path / "out"
    tk.write_clip_tokenizer(out, source=source)

    assert sorted(p.name for p in out.iterdir()) == [
        "merges.txt", "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    reference = tk.clip_tokenizer()
    expected = tk.encode_prompts(reference, PROMPTS)
    assert expected[0][:10] == ASTRONAUT_IDS
    written = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=77, pad_token=tk.EOS)
    assert tk.encode_prompts(written, PROMPTS) == expected
    page = Tokenizer.from_file(str(out / "tokenizer.json"))  # what the browser loads
    assert [e.ids for e in page.encode_batch(PROMPTS)] == reference(PROMPTS)["input_ids"]


def test_a_folder_without_either_layout_is_refused_in_one_line(tmp_path):
    empty = tmp_path / "tokenizer"
    empty.mkdir()
    with pytest.raises(WebsdError) as err:
        tk.write_clip_tokenizer(tmp_path / "out", source=empty)
    message = str(err.value)
    assert "\n" not in message and str(empty) in message
    assert "no tokenizer.json, and vocab.json and merges.txt are missing" in message
    assert "point model.name at" in message  # the fix
    assert not (tmp_path / "out").exists()


def test_sd2_models_pad_with_exclamation_mark_as_their_tokenizer_config_says(tmp_path):
    from pipeline import models
    from pipeline.config import load_config
    from transformers import CLIPTokenizer

    cfg = load_config(cli={"paths.cache": str(tmp_path / "cache"), "model.name": "tiny-turbo"})
    out = tk.run(cfg)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert (config["pad_token"], config["model_max_length"]) == ("!", 77)
    ids = tk.encode_prompts(tk.clip_tokenizer(source=out), [ASTRONAUT])[0]
    assert ids == ASTRONAUT_IDS + [0] * 67  # "!" is id 0
    # transformers reading the written folder agrees
    assert CLIPTokenizer.from_pretrained(str(out))(ASTRONAUT, padding="max_length", max_length=77)[
        "input_ids"] == ids
    # a local diffusers folder: its own tokenizer_config.json decides (here an AddedToken dict, as older
    # transformers saved it)
    folder = tmp_path / "local"
    (folder / "tokenizer").mkdir(parents=True)
    configs = {"text_encoder": {"hidden_size": 32}, "unet": {"cross_attention_dim": 32}, "vae": {}}
    for component, conf in configs.items():
        (folder / component).mkdir()
        (folder / component / "config.json").write_text(json.dumps(conf))
    (folder / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(
        {"pad_token": {"content": "!", "lstrip": False}, "model_max_length": 77}))
    local = load_config(cli={"paths.cache": str(tmp_path / "cache"), "model.name": str(folder)})
    assert models.tokenizer_settings(local).pad_token == "!"
    (folder / "tokenizer" / "tokenizer_config.json").write_text("{}")
    assert models.tokenizer_settings(local).pad_token == tk.EOS  # SD v1.x's when unsaid


def test_a_pad_token_outside_the_vocab_is_one_line(tmp_path):
    with pytest.raises(WebsdError, match="pad token"):
        tk.write_clip_tokenizer(tmp_path / "tok", pad_token="<pad-not-there>")
