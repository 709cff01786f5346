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

from .errors import WebsdError
from .fsutil import atomic_path

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
    """Vocab and merges of a Hugging Face CLIP tokenizer folder (e.g. a diffusers model's ``tokenizer/``)."""
    folder = Path(folder)
    try:
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise WebsdError(f"{e.filename} is missing: a CLIP tokenizer folder needs vocab.json and merges.txt") from None
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    if any(len(m) != 2 for m in merges) or BOS not in vocab or EOS not in vocab:
        raise WebsdError(f"{folder} is not a CLIP BPE tokenizer (merges.txt lines must be pairs; vocab.json needs "
                         f"{BOS} and {EOS})")
    return vocab, merges


def clip_tokenizer(bpe_gz: Path | None = None, source: Path | None = None):
    """A ``transformers.CLIPTokenizer`` (SD v1.5 settings: pad with eos, 77 tokens) built offline, from
    ``source`` (a folder with vocab.json + merges.txt) or else from open-clip's BPE merge list."""
    from transformers import CLIPTokenizer

    vocab, merges = read_vocab_and_merges(source) if source else clip_vocab_and_merges(bpe_gz)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH, pad_token=EOS)


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids exactly as diffusers' StableDiffusionPipeline makes them: padded/truncated to 77."""
    out = tokenizer(prompts, padding="max_length", max_length=MAX_LENGTH, truncation=True)
    return [list(ids) for ids in out["input_ids"]]


def write_clip_tokenizer(out_dir: Path, source: Path | None = None) -> None:
    """Write ``vocab.json``, ``merges.txt``, ``tokenizer.json`` and ``tokenizer_config.json`` into ``out_dir``.

    From ``source`` (a folder with vocab.json + merges.txt, e.g. a diffusers model's ``tokenizer/``), else from
    open-clip's BPE merge list. The page reads tokenizer.json + tokenizer_config.json. The directory is replaced as
    a whole, so a reader never sees a half-written set.
    """
    out_dir = Path(out_dir)
    tok = clip_tokenizer(source=source)
    vocab, merges = read_vocab_and_merges(source) if source else clip_vocab_and_merges()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_txt = "".join(f"{a} {b}\n" for a, b in merges)
        (tmp / "merges.txt").write_text("#version: 0.2\n" + merges_txt, encoding="utf-8")
        tok.backend_tokenizer.save(str(tmp / "tokenizer.json"))
        config = {
            "tokenizer_class": "CLIPTokenizer",
            "bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS,
            "model_max_length": MAX_LENGTH,
            "do_lower_case": True,
        }
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
