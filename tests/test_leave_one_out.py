"""Leave-one-out KL against transformers: skipping a layer's attention is the same model with that layer's output
projection zeroed, and the KL is torch's own kl_div over transformers' logits."""

import copy

import torch
import torch.nn.functional as F

from rad.model.io import load_model
from rad.search.leave_one_out import leave_one_out_kl


def test_leave_one_out_kl_equals_transformers_with_the_layer_silenced(tiny_dirs):
    folder, reference = tiny_dirs["llama"]
    model = load_model(folder)
    prompts = [[5, 9, 2, 7, 1, 3], [4, 4, 8, 2]]
    got = leave_one_out_kl(model, prompts)
    assert sorted(got) == list(range(reference.config.num_hidden_layers))
    for layer, value in got.items():
        silenced = copy.deepcopy(reference)
        torch.nn.init.zeros_(silenced.model.layers[layer].self_attn.o_proj.weight)
        total = 0.0
        for prompt in prompts:
            ids = torch.tensor([prompt])
            with torch.no_grad():
                full = F.log_softmax(reference(ids).logits.float(), dim=-1)
                without = F.log_softmax(silenced(ids).logits.float(), dim=-1)
            total += float(F.kl_div(without, full, log_target=True, reduction="sum"))
        assert value > 0 and abs(value - total / 10) <= 1e-5 * max(1.0, total / 10)
