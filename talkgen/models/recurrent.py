"""Recurrent layers looked at step by step: which LSTM a model reads out, and its states and gates."""

from __future__ import annotations

import torch
from torch import nn


def last_lstm(model: nn.Module) -> str | None:
    """The name of the model's last ``nn.LSTM`` (the one its output reads), or None."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.LSTM)]
    return names[-1] if names else None


def lstm_states(lstm: nn.LSTM, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Replay ``lstm`` on its input ``x`` step by step; returns h, c and the i, f, o gates of the
    last layer, each (B, T, H), on the CPU. Matches ``lstm(x)``'s outputs (tested). Computes where the LSTM's
    weights live."""
    x = x.to(lstm.weight_ih_l0.device)
    if not lstm.batch_first:
        x = x.transpose(0, 1)
    B, T = x.shape[:2]
    out = {}
    for layer in range(lstm.num_layers):
        w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
        b = getattr(lstm, f"bias_ih_l{layer}", 0) + getattr(lstm, f"bias_hh_l{layer}", 0) if lstm.bias else 0
        h = x.new_zeros(B, lstm.hidden_size)
        c = x.new_zeros(B, lstm.hidden_size)
        pre = x @ w_ih.T + b  # (B, T, 4H): gates in PyTorch's order i, f, g, o
        rec = {k: [] for k in ("h", "c", "i", "f", "o")}
        for t in range(T):
            gi, gf, gg, go = (pre[:, t] + h @ w_hh.T).chunk(4, dim=1)
            i, f, o = torch.sigmoid(gi), torch.sigmoid(gf), torch.sigmoid(go)
            c = f * c + i * torch.tanh(gg)
            h = o * torch.tanh(c)
            for k, v in (("h", h), ("c", c), ("i", i), ("f", f), ("o", o)):
                rec[k].append(v)
        out = {k: torch.stack(v, 1) for k, v in rec.items()}
        x = out["h"]
    return {k: v.cpu() for k, v in out.items()}
