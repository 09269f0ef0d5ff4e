"""Attention: rollout and flow on hand-made matrices, head scores on constructed patterns, and
recording attention from a pattern module, nn.MultiheadAttention (fast path included) and
scaled_dot_product_attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from talkgen.analyses.attention import (attention_maps, flow, head_scores, previous_occurrence,  # noqa: F401
                                        record_attention, rollout, row_entropy)

HALF = torch.tensor([[1.0, 0.0], [0.5, 0.5]])


def test_rollout_by_hand():
    # 0.5 A + 0.5 I = [[1, 0], [.25, .75]]; two layers multiply
    r1 = rollout([HALF])
    torch.testing.assert_close(r1, torch.tensor([[1.0, 0.0], [0.25, 0.75]], dtype=torch.float64))
    r2 = rollout([HALF, HALF])
    torch.testing.assert_close(r2, torch.tensor([[1.0, 0.0], [0.4375, 0.5625]], dtype=torch.float64))
    attend_first = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(rollout([attend_first, torch.eye(2)]),
                               torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64))


def test_flow_by_hand():
    np.testing.assert_allclose(flow([HALF], 1), [0.25, 0.75], atol=1e-6)  # one layer: the edge itself
    # two layers: from input 0, paths via hidden 0 (min(1, .25)) and hidden 1 (min(.25, .75)): 0.5;
    # from input 1 only via hidden 1: 0.75 (rollout would say 0.4375 and 0.5625)
    np.testing.assert_allclose(flow([HALF, HALF], 1), [0.5, 0.75], atol=1e-6)


def test_head_scores_on_constructed_patterns():
    tokens = torch.tensor([[5, 6, 7, 5, 6, 7]])
    t = tokens.shape[1]
    prev_tok = torch.zeros(1, 1, t, t)
    prev_tok[0, 0, 0, 0] = 1
    prev_tok[0, 0, torch.arange(1, t), torch.arange(t - 1)] = 1
    induction = torch.zeros(1, 1, t, t)
    src = previous_occurrence(tokens)[0] + 1
    for j in range(t):
        induction[0, 0, j, src[j] if src[j] > 0 else j] = 1
    assert previous_occurrence(tokens).tolist() == [[-1, -1, -1, 0, 1, 2]]
    p, i, d = head_scores(torch.cat([prev_tok, induction], 1), tokens)
    assert p.tolist() == pytest.approx([1.0, 0.0])
    assert i.tolist() == pytest.approx([0.0, 1.0])
    assert d.tolist() == pytest.approx([0.0, 0.0])
    uniform = torch.full((1, 1, 4, 4), 0.25)
    assert row_entropy(uniform).flatten().tolist() == pytest.approx([2.0] * 4)


class SDPAModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.qkv = nn.Linear(8, 24)
        self.out = nn.Linear(8, 10)

    def forward(self, t):
        q, k, v = self.qkv(self.embed(t)).view(t.shape[0], t.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(t.shape[0], t.shape[1], 8))


def test_recording_from_scaled_dot_product_attention():
    torch.manual_seed(0)
    model = SDPAModel().eval()
    tokens = torch.randint(0, 10, (3, 5))
    names, maps = attention_maps(model, tokens)
    assert names == [""] and maps[0].shape == (3, 2, 5, 5)
    q, k, _ = model.qkv(model.embed(tokens)).view(3, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    s = (q @ k.transpose(-1, -2)) / 2.0
    expected = s.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    torch.testing.assert_close(maps[0], expected.detach())


def test_maps_and_token_attributions_a_few_rows_at_a_time_are_the_same():
    """A large language model's passes take a few sequences at a time (its logits bound them): the maps, and every
    token attribution, are those of one pass over all of them; the parameters ask for gradients again after."""
    from talkgen import attribution as A

    class ReadsTheIds(SDPAModel):  # the ids matter beside their embeddings (as a padding mask does)
        def forward(self, t):
            return super().forward(t) * (1.0 + (t == 3).any(1).float())[:, None, None]

    torch.manual_seed(0)
    model = ReadsTheIds().eval()
    tokens = torch.randint(0, 10, (5, 6))
    tokens[tokens == 3] = 4
    tokens[1, :3] = 3  # only the second sequence reads as 'padded'
    names, maps = attention_maps(model, tokens)
    names2, maps2 = attention_maps(model, tokens, rows=2)
    assert names2 == names and maps2[0].shape == maps[0].shape == (5, 2, 6, 6)
    torch.testing.assert_close(maps2[0], maps[0])
    for method in A.TOKEN_METHODS:
        kw = {"n_steps": 8} if method == "integrated_gradients" else {}
        whole = A.token_attributions(model, tokens[:3], 4, None, method=method, **kw)
        few = A.token_attributions(model, tokens[:3], 4, None, method=method, rows=1, **kw)
        torch.testing.assert_close(few, whole, msg=method)
        assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="unknown token attribution method"):
        A.token_attributions(model, tokens, 4, None, method="lime", rows=1)
    assert all(p.requires_grad for p in model.parameters())


def test_recording_from_multihead_attention_even_on_the_fast_path():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True).eval()
    x = torch.randn(2, 6, 8)
    with record_attention(layer) as sink, torch.no_grad():
        out = layer(x)
    assert len(sink) == 1
    name, a = sink[0]
    assert name == "self_attn" and a.shape == (2, 2, 6, 6)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 6))
    with torch.no_grad():
        torch.testing.assert_close(out, layer(x))  # recording does not change the result
    assert not layer.self_attn._forward_pre_hooks and not layer._forward_hooks


def test_induction_transformer_sample_has_an_induction_head():
    from talkgen.analyses.base import Context, get_analysis
    from talkgen.models.samples import load_sample

    s = load_sample("induction-transformer")
    a = get_analysis("attention")
    r = a.run(Context(subject=s, params=a.resolve_params("quick"), seed=0, device=torch.device("cpu"),
                      profile="quick"))
    assert r.data["induction_heads"], r.data
    best = r.data["best_head"]
    assert best.startswith("L1"), best  # an induction head needs a head below it that finds the earlier copy
    assert r.data["best_induction"] > 0.5
    assert r.data["previous_token_heads"] or r.data["duplicate_token_heads"]


def test_the_probe_repeats_a_segment_of_distinct_tokens():
    from talkgen.analyses.attention import repeated_probe

    probe = repeated_probe(4, 39, 32, torch.Generator().manual_seed(0))
    assert probe.shape == (4, 39)
    prev = previous_occurrence(probe)
    assert (prev[:, :20] == -1).all()  # filler and first copy: no repeats
    assert (prev[:, 20:] == torch.arange(20, 39) - 19).all()  # second copy: exactly one period back
