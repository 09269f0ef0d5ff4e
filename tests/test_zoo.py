"""The model zoo: the batched forward and optimiser against per-member torch, resume, shards, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from talkgen.errors import TalkgenError
from talkgen.meta import zoo as Z


@pytest.fixture(scope="module")
def source():
    return Z.zoo_source("digits-cnn")


def _members(source, n=4, **override):
    spec = Z.ZooSpec(n=n, chunk=n, steps=(3, 6))
    members = [Z.sample_member(spec, i, source.image_shape, source.n_classes) | override for i in range(n)]
    return sorted(members, key=lambda m: m["optimizer"] != "adam")


def test_members_in_channels_forward_equals_each_members_own_forward(source):
    template = source.factory()
    forward, how = Z.stacked_forward(template, source.x_train)
    assert how == "members-in-channels"
    gen = torch.Generator().manual_seed(0)
    params = {k: torch.randn((3, *v.shape), generator=gen) * 0.3 for k, v in template.named_parameters()}
    x = torch.rand(3, 5, 1, 8, 8, generator=gen)
    out = forward(params, x)
    for m in range(3):
        ref = functional_call(template, {k: v[m] for k, v in params.items()}, (x[m],))
        torch.testing.assert_close(out[m], ref, atol=1e-5, rtol=1e-5)


def test_pool_before_relu_gives_the_same_values_and_gradients(source):
    """The rewrite moves the ReLU after the max-pool that reads it; outputs and every parameter's
    gradient are those of the model as written."""
    template = source.factory()
    rewritten = Z._pool_before_relu(copy.deepcopy(template))
    order = [n.target for n in rewritten.graph.nodes if n.op == "call_module"]
    assert order.index("pool") < order.index("act", order.index("conv2")), order  # conv2 -> pool -> act
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) - 0.3
    grads = []
    for net in (template, rewritten):
        net.zero_grad()
        out = net(x)
        out.square().sum().backward()
        grads.append((out.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    for k in grads[0][1]:
        torch.testing.assert_close(grads[1][1][k], grads[0][1][k], msg=k)

    class InPlace(nn.Module):  # an in-place ReLU is left alone (its input may be read elsewhere)
        def __init__(self) -> None:
            super().__init__()
            self.act, self.pool = nn.ReLU(inplace=True), nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(self.act(x))

    assert Z._pool_before_relu(InPlace()).__class__ is InPlace


def test_an_unstackable_layer_falls_back_to_vmap():
    class WithNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 8)
            self.norm = nn.LayerNorm(8)
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            return self.out(self.norm(self.fc(x)))

    template = WithNorm()
    forward, how = Z.stacked_forward(template, torch.randn(10, 4))
    assert how == "vmap"
    params = {k: torch.randn((2, *v.shape)) for k, v in template.named_parameters()}
    x = torch.randn(2, 6, 4)
    torch.testing.assert_close(forward(params, x)[1],
                               functional_call(template, {k: v[1] for k, v in params.items()}, (x[1],)))


def test_vectorised_steps_equal_torch_optim_on_each_member(source):
    """Adam and SGD-with-momentum members, weight decay, cosine schedule, per-member step counts:
    the batched update matches torch.optim run on each member alone with the same batches."""
    members = _members(source, 4)
    members[0] |= {"optimizer": "adam", "weight_decay": 1e-3, "steps": 6}
    members[1] |= {"optimizer": "adam", "weight_decay": 0.0, "steps": 3}
    members[2] |= {"optimizer": "sgd", "weight_decay": 1e-3, "steps": 6}
    members[3] |= {"optimizer": "sgd", "weight_decay": 0.0, "steps": 4}
    trainer = Z.Trainer(source, members, batch_size=8)
    st = trainer.initial()
    init = {k: v.clone() for k, v in st.params.items()}
    gen = torch.Generator().manual_seed(5)
    batches = [trainer.batches.draw(8, gen) for _ in range(6)]
    for x, y in batches:
        trainer.step_on(st, x, y)
    for i, m in enumerate(members):
        net = source.factory()
        with torch.no_grad():
            for k, p in net.named_parameters():
                p.copy_(init[k][i])
        kw = {"momentum": 0.9} if m["optimizer"] == "sgd" else {}
        Opt = torch.optim.SGD if m["optimizer"] == "sgd" else torch.optim.Adam
        opt = Opt(net.parameters(), lr=m["lr"], weight_decay=m["weight_decay"], **kw)
        steps = m["steps"]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t / steps, 1.0))))
        for x, y in batches[:steps]:
            loss = nn.functional.cross_entropy(net(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        for k, p in net.named_parameters():
            torch.testing.assert_close(st.params[k][i], p.detach(), atol=2e-5, rtol=1e-4,
                                       msg=f"member {i} ({m['optimizer']}) {k}")


def test_poisoned_batches_carry_the_trigger_and_the_target(source):
    members = _members(source, 2)
    members[0] |= {"trojan": True, "trigger": "patch", "trigger_size": 2, "trigger_row": 0, "trigger_col": 0,
                   "target_class": 7, "poison_rate": 1.0, "trigger_alpha": 1.0, "trigger_seed": 1}
    members[1] |= {"trojan": False, "label_noise": 0.0}
    b = Z._Batches(source, members)
    x, y = b.draw(16, torch.Generator().manual_seed(0))
    assert (x[0, :, 0, :2, :2] == 1).all() and (y[0] == 7).all()
    # the clean member sees true labels of its own subset
    clean = [r for r in b.pool[1, : int(b.size[1])].tolist()]
    assert set(clean) <= set(range(len(source.x_train)))


def test_label_noise_changes_the_stated_share_of_labels(source):
    m = _members(source, 1)[0] | {"label_noise": 0.3}
    b = Z._Batches(source, [m])
    changed = float((b.labels[0] != source.y_train).float().mean())
    assert 0.25 < changed < 0.35


def _tiny_spec():
    return Z.ZooSpec(n=6, chunk=3, steps=(4, 8))


def test_a_killed_build_resumes_to_the_same_members(tmp_path, monkeypatch):
    spec = _tiny_spec()
    whole = Z.ZooBuilder(spec, tmp_path / "a", save_every=2, threads=1)
    assert whole.build()
    ref = whole.load()

    b = Z.ZooBuilder(spec, tmp_path / "b", save_every=2, threads=1)
    calls = {"n": 0}
    real = Z.Trainer.step

    def dying(self, st, gen):
        calls["n"] += 1
        if calls["n"] == 13:  # part-way through the second chunk, after a saved state
            raise KeyboardInterrupt
        return real(self, st, gen)

    monkeypatch.setattr(Z.Trainer, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        b.build()
    monkeypatch.setattr(Z.Trainer, "step", real)
    assert b.missing() == [1]
    assert list(b.dir.glob("*.partial.safetensors"))
    assert b.build()
    got = b.load()
    assert not list(b.dir.glob("*.partial.safetensors"))
    for k in ref.params:
        torch.testing.assert_close(got.params[k], ref.params[k], atol=1e-6, rtol=0)
    assert [r["test_accuracy"] for r in got.records] == pytest.approx([r["test_accuracy"] for r in ref.records])


def test_shards_build_independently_and_make_one_zoo(tmp_path):
    spec = _tiny_spec()
    first = Z.ZooBuilder(spec, tmp_path, threads=1)
    assert not first.build(Z.parse_shard("1/2"))
    assert first.missing() == [1]
    with pytest.raises(TalkgenError, match="missing chunks"):
        first.load()
    second = Z.ZooBuilder(spec, tmp_path, threads=1)
    assert second.build(Z.parse_shard("2/2"))
    zoo = second.load()
    assert len(zoo.records) == 6 and [r["index"] for r in zoo.records] == list(range(6))
    assert all(v.shape[0] == 6 for v in zoo.params.values())
    index = (second.dir / "index.json").read_text()
    assert '"complete": true' in index


def test_member_recipes_depend_only_on_seed_and_index(source):
    a = Z.sample_member(Z.ZooSpec(n=10), 3, source.image_shape, 10)
    b = Z.sample_member(Z.ZooSpec(n=500), 3, source.image_shape, 10)
    assert a == b
    assert Z.sample_member(Z.ZooSpec(n=10, seed=1), 3, source.image_shape, 10) != a


@pytest.mark.parametrize("text", ["0/2", "3/2", "a/b", "1"])
def test_bad_shards_are_refused(text):
    with pytest.raises(TalkgenError):
        Z.parse_shard(text)


def test_a_zoo_needs_an_image_classifier_sample():
    with pytest.raises(TalkgenError, match="image-classifier"):
        Z.zoo_source("python-charlstm")


def test_cli_zoo_build_and_status(tmp_path):
    from click.testing import CliRunner

    from talkgen.cli import cli

    r = CliRunner().invoke(cli, ["zoo", "build", "--n", "3", "--steps", "3,5", "--out", str(tmp_path), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "1 of 1 chunks done" in r.output
    r = CliRunner().invoke(cli, ["zoo", "status", "--n", "3", "--steps", "3,5", "--out", str(tmp_path)])
    assert "complete" in r.output
    r = CliRunner().invoke(cli, ["zoo", "build", "--n", "3", "--steps", "9,5", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "--steps" in r.output
