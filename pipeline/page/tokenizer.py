"""The CLIP text tokenizer files the web page loads, built offline.

Stable Diffusion v1.x uses OpenAI CLIP's byte-level BPE (49408 ids). Its merge list ships inside the
``open-clip-torch`` package as ``bpe_simple_vocab_16e6.txt.gz``, so no model hub is needed: we rebuild the
Hugging Face files from it (the vocab order is OpenAI's: 256 byte symbols, the same with ``</w>``, one entry
per merge, then the two special tokens) and let ``transformers.CLIPTokenizer`` write ``tokenizer.json`` so
that the browser applies exactly the normalizer / pre-tokenizer / post-processor the Python side uses.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from ..errors import WebsdError
from ..fsutil import atomic_path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 77
# OpenAI CLIP keeps the first 48894 merges of the file (49152 ids - 256 bytes - 2 specials); line 0 is a header.
N_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, in the order CLIP numbers its byte symbols:
    printable bytes first (as themselves), then the rest mapped to chr(256 + k)."""
    order = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in order]
    for b in range(256):
        if b not in order:
            order.append(b)
            chars.append(chr(256 + len(chars) - 188))
    return dict(zip(order, chars))


def bpe_vocab_gz() -> Path:
    """The BPE merges file shipped with ``open-clip-torch`` (found without importing the package)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise WebsdError("open-clip-torch is not installed; run `pip install --no-deps open-clip-torch`")
    path = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise WebsdError(f"{path} is missing; reinstall open-clip-torch (`pip install --no-deps open-clip-torch`)")
    return path


def clip_vocab_and_merges(bpe_gz: Path | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocab (token -> id) and merges (pairs, by rank) of OpenAI CLIP, from the gz merge list."""
    bpe_gz = bpe_gz or bpe_vocab_gz()
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise WebsdError(f"{bpe_gz} is not CLIP's BPE merge list; reinstall open-clip-torch")
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise WebsdError(f"CLIP vocab has {len(vocab)} entries, expected {VOCAB_SIZE}; reinstall open-clip-torch")
    return vocab, merges


def read_vocab_and_merges(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocab and merges of a Hugging Face CLIP tokenizer folder (e.g. a diffusers model's ``tokenizer/``).

    Two layouts exist: vocab.json + merges.txt (what older transformers saved; preferred when present, as before),
    or only tokenizer.json (what current transformers saves; vocab and merges are inside its BPE ``model``).
    """
    folder = Path(folder)
    old_layout = [folder / "vocab.json", folder / "merges.txt"]
    if all(p.is_file() for p in old_layout):
        vocab = json.loads(old_layout[0].read_text(encoding="utf-8"))
        lines = old_layout[1].read_text(encoding="utf-8").splitlines()
        merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    elif (folder / "tokenizer.json").is_file():
        model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("model", {})
        if model.get("type") != "BPE":
            raise WebsdError(f"{folder / 'tokenizer.json'} is not a BPE tokenizer (model.type is "
                             f"{model.get('type')!r}); use the CLIP tokenizer/ folder of a Stable Diffusion v1.x model")
        vocab = model.get("vocab", {})
        # tokenizers < 0.20 saves merges as "a b" strings, newer versions as [a, b] pairs.
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    else:
        missing = [p.name for p in old_layout if not p.is_file()]
        raise WebsdError(f"{folder} holds no CLIP tokenizer: it has no tokenizer.json, and {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} missing; point model.name at a "
                         "diffusers folder whose tokenizer/ has tokenizer.json or vocab.json + merges.txt (as "
                         "CLIPTokenizer.save_pretrained writes it)")
    if not merges or any(len(m) != 2 for m in merges) or BOS not in vocab or EOS not in vocab:
        raise WebsdError(f"{folder} is not a CLIP BPE tokenizer (merges must be pairs; the vocab needs "
                         f"{BOS} and {EOS})")
    return vocab, merges


def clip_tokenizer(bpe_gz: Path | None = None, source: Path | None = None, pad_token: str | None = None,
                   max_length: int | None = None):
    """A ``transformers.CLIPTokenizer`` built offline, from ``source`` (a tokenizer folder, see
    ``read_vocab_and_merges``) or else from open-clip's BPE merge list. Pad token and max length: those given, else
    the source's tokenizer_config.json, else SD v1.x's (pad with eos, 77 tokens)."""
    vocab, merges = read_vocab_and_merges(source) if source else clip_vocab_and_merges(bpe_gz)
    conf = {}
    if source and (Path(source) / "tokenizer_config.json").is_file():
        conf = json.loads((Path(source) / "tokenizer_config.json").read_text(encoding="utf-8"))
    pad = pad_token or conf.get("pad_token") or EOS
    pad = pad.get("content", EOS) if isinstance(pad, dict) else pad
    return _clip_tokenizer(vocab, merges, pad, max_length or conf.get("model_max_length") or MAX_LENGTH)


def _clip_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], pad_token: str = EOS,
                    max_length: int = MAX_LENGTH):
    from transformers import CLIPTokenizer

    if pad_token not in vocab:
        raise WebsdError(f"the tokenizer's pad token {pad_token!r} is not in its vocabulary; fix pad_token in the "
                         "model's tokenizer/tokenizer_config.json")
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length, pad_token=pad_token)


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids exactly as diffusers' StableDiffusionPipeline makes them: padded/truncated to the tokenizer's
    max length (77) with its pad token."""
    out = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
    return [list(ids) for ids in out["input_ids"]]


def write_clip_tokenizer(out_dir: Path, source: Path | None = None, pad_token: str = EOS,
                         max_length: int = MAX_LENGTH) -> None:
    """Write ``vocab.json``, ``merges.txt``, ``tokenizer.json`` and ``tokenizer_config.json`` into ``out_dir``.

    From ``source`` (a diffusers model's ``tokenizer/``: vocab.json + merges.txt or only tokenizer.json), else from
    open-clip's BPE merge list; ``pad_token`` and ``max_length`` are the model's (pipeline.models.tokenizer_settings).
    The page reads tokenizer.json + tokenizer_config.json. The directory is replaced as
    a whole, so a reader never sees a half-written set.
    """
    out_dir = Path(out_dir)
    vocab, merges = read_vocab_and_merges(source) if source else clip_vocab_and_merges()
    tok = _clip_tokenizer(vocab, merges, pad_token, max_length)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_txt = "".join(f"{a} {b}\n" for a, b in merges)
        (tmp / "merges.txt").write_text("#version: 0.2\n" + merges_txt, encoding="utf-8")
        tok.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        config = {
            "tokenizer_class": "CLIPTokenizer",
            "bos_token": BOS, "eos_token": EOS, "pad_token": pad_token, "unk_token": EOS,
            "model_max_length": max_length,
            "do_lower_case": True,
        }
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


# what the tokenizer stage writes into the model's tokenizer/ folder (the page reads the last two)
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")
SOURCE_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")


def _source_folder(cfg) -> Path | None:
    """A local diffusers folder's own tokenizer/, or None for the embedded models (open-clip's vocabulary)."""
    from .. import models

    return None if models.materialized(cfg) else models.source(cfg).folder / "tokenizer"


def inputs(cfg) -> list[Path]:
    """The files the tokenizer stage reads: a local model's tokenizer files, else open-clip's BPE list."""
    folder = _source_folder(cfg)
    if folder is None:
        return [bpe_vocab_gz()]
    return [folder / name for name in SOURCE_FILES if (folder / name).is_file()]


def outputs(cfg) -> list[Path]:
    from ..layout import Layout

    return [Layout.from_config(cfg).tokenizer_dir / name for name in TOKENIZER_FILES]


def run(cfg) -> Path:
    """Stage ``tokenizer``: the CLIP tokenizer files the page loads, in the model's ``tokenizer/`` folder."""
    from ..layout import Layout

    from .. import models

    out = Layout.from_config(cfg).tokenizer_dir
    settings = models.tokenizer_settings(cfg)
    text_length = models.dims(cfg).max_length
    if settings.max_length != text_length:
        raise WebsdError(f"the tokenizer's model_max_length {settings.max_length} differs from the text encoder's "
                         f"{text_length} positions; fix model_max_length in the model's tokenizer_config.json")
    write_clip_tokenizer(out, source=_source_folder(cfg), pad_token=settings.pad_token,
                         max_length=settings.max_length)
    return out
