"""A vision tower's feature grid averaged over its cells: one vector per image (the ridge maps' input)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from metaembed.inputs import load_image


@torch.no_grad()
def pooled_grid_features(tower: torch.nn.Module, image_processor, images: Sequence, batch_size: int = 32,
                         progress: bool = False, desc: str = "pooled image features") -> torch.Tensor:
    """(images, channels) float32 on the CPU: ``tower``'s last feature grid (batch, channels, h, w) averaged over
    its cells; ``images`` are paths or PIL images (decoded and checked by :func:`metaembed.inputs.load_image`)."""
    rows = []
    parameter = next(tower.parameters())
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress):
        pictures = [load_image(image) for image in images[start:start + batch_size]]
        pixels = image_processor(images=pictures, return_tensors="pt")["pixel_values"].to(parameter.device)
        pixels = pixels.to(parameter.dtype, memory_format=torch.channels_last)
        rows.append(tower(pixel_values=pixels).last_hidden_state.float().mean(dim=(2, 3)).cpu())
    if not rows:
        return torch.zeros(0, 0)
    return torch.cat(rows)
