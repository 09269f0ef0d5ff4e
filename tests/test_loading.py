"""Model and data loading: every accepted form, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import TinyCNN
from talkgen.data import load_user_data
from talkgen.errors import TalkgenError
from talkgen.models.loading import load_model


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.rand(2, 1, 4, 4)
    with torch.no_grad():
        return torch.allclose(a(x), b(x))


def test_file_factory_with_safetensors(user_model_dir):
    model, source = load_model(f"{user_model_dir}/models.py:make_model", str(user_model_dir / "weights.safetensors"))
    torch.manual_seed(1)
    assert _same(model, TinyCNN()) and not model.training
    assert "weights.safetensors" in source


def test_module_factory_with_plain_state_dict(tmp_path):
    from talkgen.models.architectures import DigitsCNN

    torch.manual_seed(3)
    ref = DigitsCNN()
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    model, _ = load_model("talkgen.models.architectures:digits_cnn", str(tmp_path / "w.pt"))
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(model(x), ref.eval()(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_and_export(tmp_path):
    torch.manual_seed(2)
    ref = TinyCNN().eval()
    torch.jit.save(torch.jit.script(ref), tmp_path / "m.pt")
    scripted, _ = load_model(str(tmp_path / "m.pt"))
    assert _same(scripted, ref)
    handle = scripted.register_forward_hook(lambda *a: None)  # hooks work on the wrapper
    handle.remove()
    program = torch.export.export(ref, (torch.rand(2, 1, 4, 4),))
    torch.export.save(program, tmp_path / "m.pt2")
    exported, _ = load_model(str(tmp_path / "m.pt2"))
    assert _same(exported, ref)


def test_state_dict_given_as_model_says_what_to_do(tmp_path):
    torch.save(TinyCNN().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(TalkgenError, match="holds a state dict, not a model"):
        load_model(str(tmp_path / "sd.pt"))


def test_pickled_module_is_refused(tmp_path):
    torch.save(TinyCNN(), tmp_path / "whole.pt")
    with pytest.raises(TalkgenError, match="refused.*safetensors"):
        load_model(str(tmp_path / "whole.pt"))


def test_factory_that_raises_or_returns_junk(tmp_path):
    (tmp_path / "m.py").write_text("def boom():\n    raise ValueError('no')\n\ndef junk():\n    return 3\n")
    with pytest.raises(TalkgenError, match="factory raised ValueError: no"):
        load_model(f"{tmp_path}/m.py:boom")
    with pytest.raises(TalkgenError, match="returned int"):
        load_model(f"{tmp_path}/m.py:junk")


def test_user_data_npz_and_tensor_dict(tmp_path):
    x = np.random.default_rng(0).random((40, 1, 4, 4)).astype(np.float32)
    y = np.arange(40) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    d = load_user_data(str(tmp_path / "d.npz"))
    assert d.classes == ("a", "b", "c") and len(d.x_test) == 10 and len(d.x_train) == 30
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / "d.pt")
    d2 = load_user_data(str(tmp_path / "d.pt"))
    assert d2.classes == ("0", "1", "2") and d2.hash != d.hash
    np.savez(tmp_path / "bad.npz", x=x, y=y[:5])
    with pytest.raises(TalkgenError, match="one label per row"):
        load_user_data(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "nox.npz", y=y)
    with pytest.raises(TalkgenError, match="missing array 'x'"):
        load_user_data(str(tmp_path / "nox.npz"))


def test_tied_weights_are_counted_once():
    from talkgen.models.introspect import weight_matrices

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.out = torch.nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight

    assert [m.name for m in weight_matrices(Tied())] == ["emb.weight"]
