"""Mixer sizes for grouped-query models (`rad convert --mixer full|kv`, `--ssm-heads/--ssm-groups/--d-state/
--expand`): the `rad` init is the draft at every size, transformers' Bamba computes our logits at every size
(loaded from the folder where Bamba can express the size, built in memory where it cannot), the kv size's kqvo
reduction is exact for a group whose query heads agree, and the kv mixer has fewer weights than the attention."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, BambaConfig, BambaForCausalLM

from rad.app.cli import main
from rad.errors import RadError
from rad.model.bamba import bamba_config, to_bamba_name
from rad.model.convert import convert
from rad.model.hybrid import MixerSize
from rad.model.io import load_model, save_hybrid
from test_hybrid import ids_for, max_diff, perturbed, positions_for

LAYERS = [1, 2]
# The tiny Llama: hidden 64, 4 query heads and 2 key/value heads of 16.
SIZES = {
    "full": MixerSize("full"),  # 4 SSM heads of 16, d_inner 64
    "kv": MixerSize("kv"),  # 2 SSM heads of 16, d_inner 32: not a whole multiple of hidden, so rad_hybrid
    "explicit": MixerSize("kv", heads=2, groups=1, d_state=8, expand=1.0),  # 2 heads of 32, one B/C group
}


def hybrid_of(llama_dir, size: str, init: str = "rad"):
    return convert(load_model(llama_dir), LAYERS, init, chunk_size=8, size=SIZES[size])[0]


@pytest.mark.parametrize("size", list(SIZES))
def test_rad_init_is_exactly_the_draft_at_every_size(llama_dir, size):
    source, hybrid = load_model(llama_dir), hybrid_of(llama_dir, size)
    ids = ids_for()
    with torch.no_grad():
        draft = source(ids, positions_for(ids), skip=LAYERS)
        assert max_diff(hybrid(ids, positions_for(ids)), draft) <= 1e-6
        assert max_diff(hybrid(ids, positions_for(ids), hybrid.new_cache(2, 40)), draft) <= 1e-6


def bamba_in_memory(model):
    """transformers' Bamba for a hybrid whose mixers are narrower than hidden_size, which BambaConfig refuses
    (mamba_expand must be a whole number): the config is made with a valid width and then given the real one."""
    raw = bamba_config(model.config, "float32")
    s, hidden = model.config.ssm, model.config.hidden_size
    config = BambaConfig(**{**raw, "mamba_expand": 1, "mamba_d_head": hidden // s.n_heads})
    object.__setattr__(config, "mamba_expand", s.d_inner / hidden)
    object.__setattr__(config, "mamba_d_head", s.head_dim)
    reference = BambaForCausalLM(config).eval()
    reference.load_state_dict({to_bamba_name(n): t for n, t in model.state_dict().items() if "inv_freq" not in n},
                              strict=False)
    return reference


@pytest.mark.parametrize("size,init", [("full", "kqvo"), ("kv", "kqvo"), ("explicit", "rad")])
def test_transformers_bamba_gives_our_logits_at_every_size(llama_dir, tmp_path, size, init):
    model = perturbed(hybrid_of(llama_dir, size, init))
    model_type = save_hybrid(model, tmp_path / "h")
    assert model_type == ("rad_hybrid" if size == "kv" else "bamba")
    if model_type == "bamba":
        reference = AutoModelForCausalLM.from_pretrained(str(tmp_path / "h")).eval()
    else:
        reference = bamba_in_memory(model)
    assert reference.model.layers[1].mamba.in_proj.weight.shape == model.model.layers[1].mamba.in_proj.weight.shape
    ours, ids = load_model(tmp_path / "h"), ids_for()
    with torch.no_grad():
        got = ours(ids, positions_for(ids))
        assert max_diff(got, reference(ids).logits) <= 1e-4
        assert max_diff(got, model(ids, positions_for(ids))) == 0


def test_kv_kqvo_equals_full_kqvo_when_the_query_heads_of_a_group_agree(llama_dir):
    """With each group's query heads made equal, the full mixer's heads of a group compute the same thing, so the
    kv mixer (C from the mean query, out_proj from O summed over the group) must give the full mixer's output
    once their fresh parameters (z, dt, A, D) are set alike: its heads' values repeated per query head."""
    source = load_model(llama_dir).double()
    attn = source.model.layers[1].self_attn
    with torch.no_grad():
        q = attn.q_proj.weight.unflatten(0, (attn.num_kv_heads, -1, attn.head_dim))
        q.copy_(q[:, :1].expand_as(q).clone())
    full = convert(source, [1], "kqvo", size=MixerSize("full"))[0].model.layers[1].mamba
    kv = convert(source, [1], "kqvo", size=MixerSize("kv"))[0].model.layers[1].mamba
    rep = attn.num_heads // attn.num_kv_heads
    with torch.no_grad():
        torch.manual_seed(3)
        for p in (kv.A_log, kv.D, kv.dt_bias):
            p.add_(0.3 * torch.randn_like(p))
        kv.in_proj.weight[: kv.d_inner].normal_(0, 0.2)  # z
        kv.in_proj.weight[-kv.n_heads :].normal_(0, 0.2)  # dt
        full.A_log.copy_(kv.A_log.repeat_interleave(rep))
        full.D.copy_(kv.D.repeat_interleave(rep))
        full.dt_bias.copy_(kv.dt_bias.repeat_interleave(rep))
        z = kv.in_proj.weight[: kv.d_inner].unflatten(0, (kv.n_heads, -1)).repeat_interleave(rep, 0).flatten(0, 1)
        full.in_proj.weight[: full.d_inner].copy_(z)
        full.in_proj.weight[-full.n_heads :].copy_(kv.in_proj.weight[-kv.n_heads :].repeat_interleave(rep, 0))
        assert (full.norm.weight == 1).all() and (kv.norm.weight == 1).all()  # alike too: the norms start as ones
        h = torch.randn(2, 11, source.config.hidden_size, dtype=torch.float64)
        assert max_diff(kv(h)[0], full(h)[0]) <= 1e-10
        assert kv(h)[0].abs().max() > 1e-3  # not two zeros


def weights(model) -> int:
    return model.num_parameters()


def test_a_kv_hybrid_has_fewer_weights_than_its_teacher(llama_dir):
    teacher = load_model(llama_dir)
    assert weights(hybrid_of(llama_dir, "kv")) < weights(teacher) < weights(hybrid_of(llama_dir, "full"))


@pytest.mark.parametrize("size, message", [
    (MixerSize("kv", heads=3), "do not split into 3 SSM heads"),
    (MixerSize("full", groups=3), "3 B/C groups do not divide 4 SSM heads"),
    (MixerSize("full", expand=0.3), "is not a whole number of channels"),
    (MixerSize("half"), "unknown mixer size 'half'"),
])
def test_sizes_that_do_not_fit_are_refused(llama_dir, size, message):
    with pytest.raises(RadError, match=message):
        convert(load_model(llama_dir), LAYERS, "rad", size=size)


def test_a_hybrid_keeps_its_mixers_size(llama_dir):
    hybrid = hybrid_of(llama_dir, "full")
    more = convert(hybrid, [3], "rad")[0]  # no size asked: the hybrid's own, not the default (kv)
    assert more.model.layers[3].mamba.in_proj.weight.shape == hybrid.model.layers[1].mamba.in_proj.weight.shape
    assert convert(hybrid, [3], "rad", size=MixerSize("full"))[0].config.ssm == hybrid.config.ssm
    with pytest.raises(RadError, match="mixers have one size already"):
        convert(hybrid, [3], "rad", size=MixerSize("full", heads=1))


def test_kqvo_refuses_sizes_it_cannot_map(llama_dir):
    with pytest.raises(RadError, match="use --init rad for other sizes"):
        convert(load_model(llama_dir), LAYERS, "kqvo", size=SIZES["explicit"])


def test_info_and_bench_give_the_weights_of_a_replaced_layer(llama_dir, tmp_path, capsys):
    """Counted against the reference implementations: transformers' Llama attention and Bamba mixer."""
    from transformers import LlamaForCausalLM

    hybrid = hybrid_of(llama_dir, "kv")
    save_hybrid(hybrid, tmp_path / "h", copy_from=llama_dir)
    teacher = LlamaForCausalLM.from_pretrained(str(llama_dir))
    attention = sum(p.numel() for p in teacher.model.layers[0].self_attn.parameters())
    ssm = sum(p.numel() for p in bamba_in_memory(hybrid).model.layers[1].mamba.parameters())
    assert main(["info", str(tmp_path / "h"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters_per_mixer"] == {"attention": attention, "ssm": ssm}
    assert info["parameters"] == teacher.num_parameters() - len(LAYERS) * (attention - ssm)
    assert main(["bench", str(llama_dir), str(tmp_path / "h"), "--contexts", "8", "--batch-sizes", "1",
                 "--new-tokens", "2", "--reps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert f"weights {info['parameters']:,} vs {teacher.num_parameters():,}" in out
    assert f"per replaced layer {ssm:,} SSM weights for {attention:,} of attention" in out
