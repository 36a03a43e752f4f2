"""Losses of slt_basins.losses against hand-computed values, vmap safety and a tiny HF GPT-2."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

from slt_basins.data import TensorData, as_data
from slt_basins.functional import FlatModel, output_tensor
from slt_basins.losses import LOSS_NAMES, batch_loss, resolve_loss

B, S, V = 3, 5, 7


def _logits(seed=0, shape=(B, S, V)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _ids(seed=1, shape=(B, S), high=V):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


def test_token_cross_entropy_equals_flat_cross_entropy():
    logits, t = _logits(), _ids()
    spec = resolve_loss("token_cross_entropy")
    want = F.cross_entropy(logits.reshape(-1, V), t.reshape(-1))
    assert torch.allclose(spec.mean(logits, (None, t)), want)
    per = spec.per_sample(logits, {"x": logits, "labels": t})
    assert per.shape == (B,) and torch.allclose(per.mean(), want)
    assert torch.allclose(per[1], F.cross_entropy(logits[1], t[1]))


def test_token_cross_entropy_ignores_minus_100_per_sequence():
    logits, t = _logits(), _ids()
    t[0, 1:] = -100
    t[2, 3] = -100
    spec = resolve_loss("token_cross_entropy")
    per = spec.per_sample(logits, t)
    assert torch.allclose(per[0], F.cross_entropy(logits[0, :1], t[0, :1]))
    assert torch.allclose(per[2], F.cross_entropy(logits[2], t[2], ignore_index=-100))  # mean of 4 tokens
    assert torch.allclose(spec.mean(logits, t), per.mean())  # sequences weighted equally
    assert not torch.allclose(spec.mean(logits, t), F.cross_entropy(logits.reshape(-1, V), t.reshape(-1)))


def test_causal_lm_shift_ignore_and_attention_mask():
    logits, ids = _logits(), _ids()
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, 3:] = 0  # right padding of sequence 1
    labels = ids.clone()
    labels[2, 2] = -100
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    spec = resolve_loss("causal_lm")
    per = spec.per_sample(logits, batch)
    assert torch.allclose(per[0], F.cross_entropy(logits[0, :-1], ids[0, 1:]))
    assert torch.allclose(per[1], F.cross_entropy(logits[1, :2], ids[1, 1:3]))
    keep = [0, 2, 3]  # label position 2 (logit position 1) is -100
    assert torch.allclose(per[2], F.cross_entropy(logits[2, keep], labels[2, 1:][keep]))
    assert torch.allclose(spec.mean(logits, batch), per.mean())
    # no "labels": the input ids are the labels; a tuple (x, labels) works too
    no_labels = {"input_ids": ids, "attention_mask": mask}
    assert torch.allclose(spec.per_sample(logits, no_labels)[:2], per[:2])
    assert torch.allclose(spec.mean(logits, (ids, ids)), F.cross_entropy(logits[:, :-1].reshape(-1, V),
                                                                        ids[:, 1:].reshape(-1)))


@pytest.mark.parametrize("name, outputs, targets", [
    ("mse", _logits(shape=(B, 4)), _logits(1, (B, 4))),
    ("cross_entropy", _logits(shape=(B, 4)), _ids(shape=(B,), high=4)),
    ("cross_entropy", _logits(shape=(B, 4, 2)), _ids(shape=(B, 2), high=4)),
    ("token_cross_entropy", _logits(), _ids()),
    ("causal_lm", _logits(), _ids()),
])
def test_per_sample_mean_is_the_mean(name, outputs, targets):
    spec = resolve_loss(name)
    per = spec.per_sample(outputs, (None, targets))
    assert per.shape == (B,)
    assert torch.allclose(per.mean(), spec.mean(outputs, (None, targets)))


@pytest.mark.parametrize("seq", [V, 4])
def test_cross_entropy_refuses_language_model_shapes(seq):
    spec = resolve_loss("cross_entropy")
    with pytest.raises(ValueError, match="token_cross_entropy") as e:
        spec.prepare_targets(_logits(shape=(B, seq, V)), _ids(shape=(B, seq)))
    assert ("both" in str(e.value)) == (seq == V)
    # PyTorch's own convention still works: (batch, classes, d1) with labels (batch, d1)
    assert spec.prepare_targets(_logits(shape=(B, V, 4)), _ids(shape=(B, 4))).shape == (B, 4)


def test_prepare_checks_and_conversions():
    spec = resolve_loss("token_cross_entropy")
    data = as_data({"input_ids": _ids(), "labels": _ids().double()})
    assert spec.prepare(_logits(), data).targets.dtype == torch.long
    with pytest.raises(ValueError, match=r"\[0, 6\]"):
        spec.prepare(_logits(), data.with_targets(_ids() + V))
    with pytest.raises(ValueError, match="aligned"):
        spec.prepare(_logits(), data.with_targets(_ids(shape=(B, S - 1))))
    with pytest.raises(ValueError, match="needs targets"):
        resolve_loss("mse").prepare(_logits(), TensorData({"x": _logits()}))
    lm = resolve_loss("causal_lm")
    ids_only = TensorData({"input_ids": _ids()})
    assert lm.prepare(_logits(), ids_only) is ids_only
    with pytest.raises(ValueError, match="seq"):
        lm.prepare(_logits(shape=(B, V)), ids_only)
    with pytest.raises(ValueError, match="unknown loss"):
        resolve_loss("nll")
    assert set(LOSS_NAMES) == {"mse", "cross_entropy", "token_cross_entropy", "causal_lm"}


def test_sequences_without_counted_tokens_give_zero_and_are_refused():
    logits, ids = _logits(), _ids()
    mask = torch.ones(B, S, dtype=torch.long)
    mask[0, 1:] = 0  # only the first token: nothing to predict
    batch = {"input_ids": ids, "attention_mask": mask}
    spec = resolve_loss("causal_lm")
    per = spec.per_sample(logits, batch)
    assert per[0] == 0 and torch.isfinite(spec.mean(logits, batch))
    g = torch.autograd.grad(spec.mean(logits.requires_grad_(), batch), logits)[0]
    assert torch.isfinite(g).all() and (g[0] == 0).all()
    with pytest.raises(ValueError, match=r"1 of the 3 examples have no counted token.*\[0\]"):
        spec.prepare(logits, TensorData(batch))
    t = ids.clone()
    t[2] = -100
    with pytest.raises(ValueError, match=r"\[2\]"):
        resolve_loss("token_cross_entropy").prepare(logits, TensorData((ids, t)))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_losses_are_vmap_safe_over_chains(name):
    chains = 4
    out = _logits(3, (chains, B, S, V)) if name != "mse" else _logits(3, (chains, B, S))
    if name == "mse":
        targets = _logits(4, (chains, B, S))
    elif name == "cross_entropy":
        targets = _ids(shape=(chains, B, V), high=S)
    else:
        targets = _ids(shape=(chains, B, S))
        targets[:, 0, 2] = -100
    batch = {"input_ids": targets.clamp(min=0), "attention_mask": (targets >= 0).long(), "labels": targets}
    spec = resolve_loss(name)
    got = vmap(spec.mean)(out, batch)
    want = torch.stack([spec.mean(out[c], {k: v[c] for k, v in batch.items()}) for c in range(chains)])
    assert torch.allclose(got, want)


def test_user_callables_and_batch_hook():
    out, t = _logits(shape=(B, 4)), _ids(shape=(B,), high=4)
    spec = resolve_loss(lambda o, y: F.cross_entropy(o, y), out, {"x": out, "label": t})
    assert spec.name == "callable" and spec.per_sample is not None
    assert torch.allclose(spec.per_sample(out, {"x": out, "label": t}), F.cross_entropy(out, t, reduction="none"))
    assert resolve_loss(lambda o, y: F.cross_entropy(o, y) ** 2, out, t).per_sample is None
    with pytest.raises(ValueError, match="batch_loss"):
        spec.prepare(out, TensorData({"x": out}))

    def weighted(o, batch):
        return (batch["w"] * F.cross_entropy(o, batch["y"], reduction="none")).mean()

    batch = {"x": out, "w": torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), "y": t}
    hook = resolve_loss(batch_loss(weighted), out, batch)
    assert hook.name == "batch_callable" and hook.per_sample is not None
    assert torch.allclose(hook.per_sample(out, batch).mean(), weighted(out, batch))
    data = TensorData(batch)
    assert hook.prepare(out, data) is data


transformers = pytest.importorskip("transformers")


def _gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=16, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_causal_lm_matches_huggingface_loss_on_tiny_gpt2():
    model = _gpt2()
    ids = _ids(seed=2, shape=(4, 8), high=16)
    labels = ids.clone()
    labels[:, :3] = -100  # a masked prompt of equal length: every sequence counts 4 tokens
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    fm = FlatModel(model)
    with torch.no_grad():
        raw = model(input_ids=ids, attention_mask=batch["attention_mask"], labels=labels)
        out = fm.outputs(fm.w_star, batch)
    assert isinstance(raw, transformers.modeling_outputs.CausalLMOutputWithCrossAttentions)
    assert torch.equal(output_tensor(raw), raw.logits) and torch.allclose(out, raw.logits, atol=1e-6)
    spec = resolve_loss("causal_lm")
    data = spec.prepare(out, as_data(batch))
    assert torch.allclose(spec.mean(out, data.batch), raw.loss, atol=1e-6)
    assert torch.allclose(spec.per_sample(out, data.batch).mean(), raw.loss, atol=1e-6)
    # no labels: HF needs labels=input_ids, ours reads the input ids
    with torch.no_grad():
        plain = model(input_ids=ids, labels=ids).loss
    assert torch.allclose(spec.mean(out, {"input_ids": ids}), plain, atol=1e-6)
    # chains vectorised over the parameters, full batch
    w = fm.w_star + 1e-3 * torch.randn(2, fm.d, generator=torch.Generator().manual_seed(0))
    losses = vmap(lambda wc: spec.mean(fm.outputs(wc, {"input_ids": ids}), {"input_ids": ids}))(w)
    assert torch.allclose(losses[1], spec.mean(fm.outputs(w[1], {"input_ids": ids}), {"input_ids": ids}), atol=1e-6)
