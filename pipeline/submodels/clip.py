"""clip(input_ids: int32[2, 77]) -> float32[2, 77, H]: the CLIP text encoder's last hidden state.

Row 0 is the negative/unconditional prompt, row 1 the prompt. WebGPU has no 64-bit integers, so the ids and
the position-id buffer are int32.
"""
from __future__ import annotations

from ..config import Config

COMPONENT = "text_encoder"
OUTPUT = "text_emb"


def wrapper(cfg: Config):
    import torch

    from .. import hf

    text_encoder = hf.load_component(cfg, COMPONENT)
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

    ids = torch.randint(0, dims.vocab_size, (2, dims.max_length), generator=generator, dtype=torch.int64)
    return {"input_ids": ids.to(torch.int32)}
