"""rnn-cells finds a planted counter cell; the LSTM replay matches PyTorch's LSTM."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from talkgen.analyses.base import Context
from talkgen.analyses.rnn_cells import RNNCells
from talkgen.models.recurrent import lstm_states
from talkgen.stats import auroc, pearson
from talkgen.data.pysource import VOCAB, VOCAB_SIZE, char_labels, encode
from talkgen.subject import Subject, SubjectData

SNIPPET = '''def f(a, b=(1, [2, 3])):
    """Docstring without brackets."""
    x = {"k": [a, (b, {c})]}  # a comment
    if x:
        return g(h(i(j(1))), k[(2)])
    return [(((a)))]
'''


def test_replay_matches_pytorch_lstm():
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, num_layers=2, batch_first=True)
    x = torch.randn(3, 11, 5)
    out, (h_n, c_n) = lstm(x)
    states = lstm_states(lstm, x)
    torch.testing.assert_close(states["h"], out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(states["c"][:, -1], c_n[-1], atol=1e-5, rtol=1e-5)


def test_scores_against_known_answers():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, 1000).astype(float)
    acts = np.column_stack([rng.normal(size=1000), 2 * label + 1, -label])
    r = pearson(acts, label)
    assert abs(r[0]) < 0.1 and np.isclose(r[1], 1) and np.isclose(r[2], -1)
    auc = auroc(acts, label > 2)
    assert np.isclose(auc[2], 1 - auc[1]) and auc[1] > 0.95


class CounterModel(nn.Module):
    """One-hot characters into an LSTM whose unit 0 adds 0.5 per '(' and subtracts 0.5 per ')'."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_SIZE, VOCAB_SIZE)
        self.lstm = nn.LSTM(VOCAB_SIZE, 4, batch_first=True)
        self.decoder = nn.Linear(4, VOCAB_SIZE)
        H = 4
        with torch.no_grad():
            self.embed.weight.copy_(torch.eye(VOCAB_SIZE))
            self.lstm.weight_ih_l0.zero_()
            self.lstm.weight_hh_l0.zero_()
            self.lstm.bias_hh_l0.zero_()
            bias = torch.zeros(4 * H)
            bias[0:H] = 20.0        # input gate open
            bias[H:2 * H] = 20.0    # forget gate open: the cell keeps its count
            bias[3 * H:] = 20.0     # output gate open
            self.lstm.bias_ih_l0.copy_(bias)
            g = self.lstm.weight_ih_l0[2 * H:3 * H]  # cell candidate rows
            for ch in "([{":
                g[0, VOCAB.index(ch)] = float(np.arctanh(0.5))
            for ch in ")]}":
                g[0, VOCAB.index(ch)] = -float(np.arctanh(0.5))

    def forward(self, tokens):
        out, _ = self.lstm(self.embed(tokens))
        return self.decoder(out)


def test_planted_counter_cell_is_found():
    text = SNIPPET * 4  # the same snippet as conftest.PY_SNIPPET
    tokens = torch.from_numpy(encode(text))
    window = 64
    n = (len(tokens) - 1) // window
    x = tokens[: n * window].view(n, window)
    y = tokens[1: n * window + 1].view(n, window)
    labels = char_labels(text + " ")
    # The planted cell has counted a bracket once it has read it: compare it with the depth just
    # after each character, relative to the window's start (each window starts from zero state).
    after = labels["bracket_depth"][1: n * window + 1].reshape(n, window)
    start = labels["bracket_depth"][: n * window].reshape(n, window)[:, :1]
    relative = (after - start).reshape(-1)

    def text_labels():
        out = {k: v[: n * window] for k, v in labels.items()}
        out["bracket_depth"] = relative
        out["text"] = text[: n * window]
        return out

    subject = Subject(name="counter", model=CounterModel(), task="char-lm",
                      data=SubjectData(x, y, x, y, tuple(VOCAB) + ("?",), "snippet"), source="test",
                      text_labels=text_labels)
    analysis = RNNCells()
    assert analysis.applies_to(subject) is True
    result = analysis.run(Context(subject=subject, params=analysis.resolve_params("quick"), seed=0,
                                  device=torch.device("cpu"), profile="quick"))
    best = result.data["scores"]["bracket_depth"]
    assert best["state"] == "c" and best["unit"] == 0 and best["score"] > 0.99
    assert result.summaries["bracket_depth.best_score_at_init"].value < 0.9
    assert "bracket_depth" in result.data["found"]
    assert any(f.kind == "coloured_text" for f in result.figures)


def test_does_not_apply_without_lstm_or_labels(tiny_subject):
    assert "nn.LSTM" in RNNCells().applies_to(tiny_subject)
