"""The sample models' architectures (small enough to train on a laptop CPU in seconds)."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two 3x3 conv layers and two linear layers for 8x8 grey digits.

    (B, 1, 8, 8) -conv1-> (B, 16, 8, 8) -conv2-> (B, 32, 8, 8) -pool-> (B, 32, 4, 4)
    -fc1-> (B, 64) -fc2-> (B, 10) logits.
    """

    def __init__(self, width: int = 16, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(2 * width * 4 * 4, 64)
        self.fc2 = nn.Linear(64, n_classes)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x))                # (B, W, 8, 8)
        h = self.pool(self.act(self.conv2(h)))     # (B, 2W, 4, 4)
        h = self.act(self.fc1(h.flatten(1)))       # (B, 64)
        return self.fc2(h)                         # (B, 10)


def digits_cnn() -> DigitsCNN:
    """Factory used by the ``digits-cnn`` sample (``talkgen.models.architectures:digits_cnn``)."""
    return DigitsCNN()


class CharLSTM(nn.Module):
    """Character-level language model: embedding -> LSTM -> linear decoder over the vocabulary.

    (B, T) token ids -> (B, T, vocab) next-character logits. Its cells' states, step by step, come
    from ``talkgen.analyses.rnn_cells.lstm_states`` (Karpathy, Johnson & Fei-Fei 2015).
    """

    def __init__(self, vocab: int = 98, embed: int = 64, hidden: int = 256, layers: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))  # (B, T, H)
        return self.decoder(out)                # (B, T, vocab)


def python_charlstm() -> CharLSTM:
    return CharLSTM()


class ExplicitAttention(nn.Module):
    """Causal multi-head self-attention with the softmax matrix computed explicitly.

    The attention pattern passes through ``self.pattern`` (an identity) so that a forward hook
    on it sees every (B, heads, T, T) matrix; no fused kernel hides it.
    """

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads, self.d_head = heads, d_model // heads
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.o = nn.Linear(d_model, d_model, bias=False)
        self.pattern = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.heads, self.d_head).transpose(1, 2)  # (B, heads, T, d_head)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / self.d_head**0.5             # (B, heads, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        attn = self.pattern(scores.masked_fill(mask, float("-inf")).softmax(-1))
        out = (attn @ v).transpose(1, 2).reshape(B, T, D)               # (B, T, D)
        return self.o(out)


class AttnOnlyBlock(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.attn = ExplicitAttention(d_model, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(x)  # residual stream


class AttentionOnlyTransformer(nn.Module):
    """A 2-layer attention-only transformer (no MLPs, no layer norm): the smallest model in which
    an induction head can form (Olsson et al. 2022). (B, T) tokens -> (B, T, vocab) logits."""

    def __init__(self, vocab: int = 32, d_model: int = 64, heads: int = 4, layers: int = 2,
                 max_len: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(AttnOnlyBlock(d_model, heads) for _ in range(layers))
        self.unembed = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]
        x = self.embed(tokens) + self.pos(torch.arange(T, device=tokens.device))  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.unembed(x)


def induction_transformer() -> AttentionOnlyTransformer:
    return AttentionOnlyTransformer()


class IBNet(nn.Module):
    """The 12-10-7-5-4-3-2 network of the information-bottleneck experiments
    (Shwartz-Ziv & Tishby 2017; Saxe et al. 2018). ``activation``: "tanh" or "relu"."""

    WIDTHS = (12, 10, 7, 5, 4, 3, 2)

    def __init__(self, activation: str = "tanh") -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(self.WIDTHS[:-1], self.WIDTHS[1:]))
        # one activation module per hidden layer, so that a hook sees each layer's output T
        act = nn.Tanh if activation == "tanh" else nn.ReLU
        self.acts = nn.ModuleList(act() for _ in self.WIDTHS[1:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, act in zip(self.layers[:-1], self.acts):
            x = act(layer(x))
        return self.layers[-1](x)  # (B, 2) logits


def ib_tanh() -> IBNet:
    return IBNet("tanh")


def ib_relu() -> IBNet:
    return IBNet("relu")
