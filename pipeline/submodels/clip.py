"""clip(input_ids: int32[2, 77]) -> float32[2, 77, H]: the CLIP text encoder's last hidden state.

Row 0 is the negative/unconditional prompt, row 1 the prompt; a model without classifier-free guidance
(``Dims.classifier_free`` False) takes the prompt alone: int32[1, 77] -> float32[1, 77, H]. SD 2.x's encoder is
saved without its last layer, so its last hidden state is the penultimate-layer output SD 2.x conditions on. WebGPU has no 64-bit integers, so the ids and
the position-id buffer are int32. A token-embedding table over the WebGPU binding limit (float32 SD v1.5: 49408 x 768
x 4 bytes = 151.8 MB > 128 MiB) is traced as tables of consecutive rows, each id gathered from its own table.
"""
from __future__ import annotations

from ..config import Config
from ..webgpu import limits
from . import get
from .attention import register_transformers_attention


def token_embedding_parts(text_config: dict, dtype: str, binding_limit: int) -> int:
    """Tables the token embedding is split into so that each fits ``binding_limit`` bytes (1: not split)."""
    nbytes = text_config.get("vocab_size", 49408) * text_config.get("hidden_size", 768) * {"float32": 4,
                                                                                           "float16": 2}[dtype]
    return -(-nbytes // binding_limit)


def split_embedding(embedding, parts: int):
    """An ``nn.Embedding`` as ``parts`` tables of consecutive rows: each id is looked up in every table (at row 0 of
    the tables that do not hold it, by a ``where`` on the ids) and the row of the one holding it is selected, which
    is exactly the unsplit lookup. ``row_slices`` tells trace which rows of which weight each table holds (the
    shards store them)."""
    import torch

    vocab = embedding.weight.shape[0]
    step = -(-vocab // parts)

    class SplitEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.row_slices = {}
            self.starts = list(range(0, vocab, step))
            for start in self.starts:
                stop = min(start + step, vocab)
                self.register_parameter(f"rows_{start}", torch.nn.Parameter(
                    embedding.weight.detach()[start:stop].clone(), requires_grad=False))
                self.row_slices[f"rows_{start}"] = ("weight", start, stop)

        def forward(self, ids):
            out = None
            for start in self.starts:
                table = getattr(self, f"rows_{start}")
                inside = (ids >= start) & (ids < start + table.shape[0])
                rows = torch.nn.functional.embedding(torch.where(inside, ids - start, 0), table)
                out = rows if out is None else torch.where(inside.unsqueeze(-1), rows, out)
            return out

    return SplitEmbedding()


def wrapper(cfg: Config):
    import torch

    from ..model import hf

    # attention as one websd::attention op per layer (fused on WebGPU: pipeline.webgpu.flash_attention)
    text_encoder = hf.load_component(cfg, get("clip").component, register_transformers_attention())
    for module in text_encoder.modules():  # the embeddings' position-id buffer (transformers moves it around)
        if isinstance(module._buffers.get("position_ids"), torch.Tensor):
            module.position_ids = module.position_ids.to(torch.int32)
    parts = token_embedding_parts(text_encoder.config.to_dict(), cfg.model.dtype,
                                  limits.profile(cfg.webgpu.limits)["maxStorageBufferBindingSize"])
    if parts > 1:
        text_encoder.set_input_embeddings(split_embedding(text_encoder.get_input_embeddings(), parts))

    class ClipEntry(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text_encoder = text_encoder

        def forward(self, input_ids):
            return self.text_encoder(input_ids=input_ids, return_dict=False)[0]

    return ClipEntry().eval()


def inputs(dims, generator) -> dict:
    import torch

    ids = torch.randint(0, dims.vocab_size, (dims.text_batch, dims.max_length), generator=generator, dtype=torch.int64)
    return {"input_ids": ids.to(torch.int32)}
