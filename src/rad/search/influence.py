"""ShortGPT-style block influence of each attention sub-layer: 1 - cos(residual before, residual after).

A sub-layer that barely turns the residual stream (influence near 0) is a candidate for removal
(Men et al. 2024, "ShortGPT", arXiv 2403.03853, applied here to the attention sub-layer alone).
It needs one forward of the full model per prompt and no search, which makes it the cheap baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from rad.model.llama import CausalLM


@torch.inference_mode()
def block_influence(model: CausalLM, prompts: Sequence[Sequence[int]]) -> dict[int, float]:
    """{attention layer: mean over all prompt tokens of 1 - cos(x, x + attention(x))}."""
    layers = model.config.attention_layers
    before, totals, count = {}, dict.fromkeys(layers, 0.0), 0

    def keep_input(layer):
        def hook(module, args):
            before[layer] = args[0]  # the residual stream entering the layer, i.e. before attention
        return hook

    def add_influence(layer):
        def hook(module, args, output):
            x = before[layer].float()
            totals[layer] += float((1 - F.cosine_similarity(x, x + output.float(), dim=-1)).sum())
        return hook

    handles = []
    for layer in layers:
        block = model.model.layers[layer]
        handles.append(block.register_forward_pre_hook(keep_input(layer)))
        handles.append(block.self_attn.register_forward_hook(add_influence(layer)))
    try:
        for prompt in prompts:  # one at a time: no padding tokens in the average
            ids = torch.tensor([list(prompt)], device=model.device)
            model(ids, torch.arange(ids.shape[1], device=model.device)[None])
            count += ids.shape[1]
    finally:
        for handle in handles:
            handle.remove()
    return {layer: total / count for layer, total in totals.items()}
