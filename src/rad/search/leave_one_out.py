"""Leave-one-out KL of each attention sub-layer: the full model's next-token distribution against the model with
that one sub-layer skipped, KL(full || skipped) per token, averaged over the prompt tokens.

It is the quality-driven selection of Apriel-H1 and of KL-guided layer selection: remove the layers whose absence
the output distribution notices least. Unlike block influence it looks at the output, not at one layer's residual
stream; unlike the diagnosis it measures how far each layer moves the distribution, not whether a draft without
a set of layers is accepted. One forward per attention layer and per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rad.model.llama import CausalLM


@torch.inference_mode()
def leave_one_out_kl(model: CausalLM, prompts: Sequence[Sequence[int]]) -> dict[int, float]:
    """{attention layer: mean over all prompt tokens of KL(full model || model without that layer's attention)}."""
    layers = model.config.attention_layers
    totals, count = dict.fromkeys(layers, 0.0), 0
    for prompt in prompts:  # one at a time: no padding tokens in the average
        ids = torch.tensor([list(prompt)], device=model.device)
        positions = torch.arange(ids.shape[1], device=model.device)[None]
        full = torch.log_softmax(model(ids, positions).float(), dim=-1)
        for layer in layers:
            skipped = torch.log_softmax(model(ids, positions, skip=(layer,)).float(), dim=-1)
            totals[layer] += float((full.exp() * (full - skipped)).sum())
        count += ids.shape[1]
    return {layer: total / count for layer, total in totals.items()}
