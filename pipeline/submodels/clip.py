"""clip(input_ids: int32[2, 77]) -> float32[2, 77, H]: the CLIP text encoder's last hidden state.

Row 0 is the negative/unconditional prompt, row 1 the prompt; a model without classifier-free guidance
(``Dims.classifier_free`` False) takes the prompt alone: int32[1, 77] -> float32[1, 77, H]. SD 2.x's encoder is
saved without its last layer, so its last hidden state is the penultimate-layer output SD 2.x conditions on. WebGPU has no 64-bit integers, so the ids and
the position-id buffer are int32.
"""
from __future__ import annotations

from ..config import Config
from . import get
from .attention import register_transformers_attention


def wrapper(cfg: Config):
    import torch

    from ..model import hf

    # attention as one websd::attention op per layer (fused on WebGPU: pipeline.webgpu.flash_attention)
    text_encoder = hf.load_component(cfg, get("clip").component, register_transformers_attention())
    for module in text_encoder.modules():  # the embeddings' position-id buffer (transformers moves it around)
        if isinstance(module._buffers.get("position_ids"), torch.Tensor):
            module.position_ids = module.position_ids.to(torch.int32)

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
