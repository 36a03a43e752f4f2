"""Weight-refined LLC: ``params=`` as glob patterns, predicates or ``{name: bool mask}``, and the head masks
of :func:`slt_basins.attention_head_params` (Wang et al. 2024, arXiv:2410.02984).

* the masks select exactly the hand-indexed rows/columns of one head, for ``nn.MultiheadAttention``,
  GPT-2 (fused ``c_attn``) and LLaMA (grouped-query ``q/k/v/o_proj``), read off weights set to arange;
* a model whose loss is a least-squares regression that is linear in the weights of an
  ``nn.MultiheadAttention``: one head's restricted LLC is that quadratic block's own λ (k/2 up to the known
  finite-γ, finite-ε terms), and equals the LLC of the head's entries as a model of their own;
* glob patterns, their order, and the errors for patterns, masks and layouts;
* the masked, vmapped forward of GPT-2 equals the module's own forward, at w* and off it, and its gradient
  is the module's gradient at the masked entries.
"""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import vmap

from slt_basins import LLCWarning, attention_head_params, attention_modules, estimate_llc
from slt_basins.functional import FlatModel
from slt_basins.targets import attention_for_vmap
from conftest import gaussian_sgld_target

F64 = torch.float64


def arange_weights(model):
    """Set every parameter to 0, 1, 2, ... (row-major) so that values name their positions."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape))
    return model


def assert_selects(model, masks, expected):
    """Each mask picks exactly the hand-indexed entries ``expected[name]`` (a tensor of values), in row-major
    order, and FlatModel's w* is their concatenation in the masks' order."""
    assert list(masks) == list(expected)
    params = dict(model.named_parameters())
    for name, want in expected.items():
        assert masks[name].dtype == torch.bool and masks[name].shape == params[name].shape
        assert torch.equal(params[name].detach()[masks[name]], want.reshape(-1)), name
    fm = FlatModel(model, masks)
    assert torch.equal(fm.w_star, torch.cat([w.reshape(-1) for w in expected.values()]))
    assert fm.names == list(expected) and fm.d == sum(int(m.sum()) for m in masks.values())


# ---- (a) the masks select exactly the head's entries ---------------------------------------------------

@pytest.mark.parametrize("head", [0, 2])
def test_multihead_attention_masks(head):
    E, H = 6, 3
    dh = E // H
    mha = arange_weights(nn.MultiheadAttention(E, H, add_bias_kv=True))
    W, b, Wo = mha.in_proj_weight.detach(), mha.in_proj_bias.detach(), mha.out_proj.weight.detach()
    rows = [slice(o + head * dh, o + (head + 1) * dh) for o in (0, E, 2 * E)]
    cols = slice(head * dh, (head + 1) * dh)
    expected = {"in_proj_weight": torch.cat([W[r] for r in rows]), "in_proj_bias": torch.cat([b[r] for r in rows]),
                "bias_k": mha.bias_k.detach()[..., cols], "bias_v": mha.bias_v.detach()[..., cols],
                "out_proj.weight": Wo[:, cols]}
    assert_selects(mha, attention_head_params(mha, 0, head), expected)
    # the heads partition the per-head weights; the shared output bias is in no head
    union = [attention_head_params(mha, 0, h)["in_proj_weight"].int() for h in range(H)]
    assert torch.equal(sum(union), torch.ones_like(union[0]))


def test_multihead_attention_with_separate_projections():
    mha = arange_weights(nn.MultiheadAttention(4, 2, kdim=3, vdim=5))
    assert not mha._qkv_same_embed_dim
    masks = attention_head_params(mha, 0, 1)
    b = mha.in_proj_bias.detach()
    expected = {"q_proj_weight": mha.q_proj_weight.detach()[2:4], "k_proj_weight": mha.k_proj_weight.detach()[2:4],
                "v_proj_weight": mha.v_proj_weight.detach()[2:4], "in_proj_bias": torch.cat([b[2:4], b[6:8], b[10:12]]),
                "out_proj.weight": mha.out_proj.weight.detach()[:, 2:4]}
    assert_selects(mha, masks, expected)


def gpt2(n_layer=2):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=n_layer, n_head=2, n_embd=8, vocab_size=12, n_positions=16,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def llama(attention_bias=False):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=12, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                                   attention_bias=attention_bias, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_gpt2_masks():
    model = arange_weights(gpt2())
    assert attention_modules(model) == ["transformer.h.0.attn", "transformer.h.1.attn"]
    E, dh, h = 8, 4, 1
    attn = model.transformer.h[1].attn
    W, b, P = attn.c_attn.weight.detach(), attn.c_attn.bias.detach(), attn.c_proj.weight.detach()
    cols = [o + h * dh + torch.arange(dh) for o in (0, E, 2 * E)]
    col = torch.cat(cols).sort().values
    p = "transformer.h.1.attn."
    expected = {p + "c_attn.weight": W[:, col], p + "c_attn.bias": b[col], p + "c_proj.weight": P[h * dh:(h + 1) * dh]}
    assert_selects(model, attention_head_params(model, 1, h), expected)


@pytest.mark.parametrize("head, kv_head", [(0, 0), (1, 0), (2, 1), (3, 1)])
def test_llama_masks_with_grouped_query_attention(head, kv_head):
    model = arange_weights(llama(attention_bias=True))
    attn, dh = model.model.layers[0].self_attn, 4
    q, kv = slice(head * dh, (head + 1) * dh), slice(kv_head * dh, (kv_head + 1) * dh)
    p = "model.layers.0.self_attn."
    expected = {p + "q_proj.weight": attn.q_proj.weight.detach()[q], p + "q_proj.bias": attn.q_proj.bias.detach()[q],
                p + "k_proj.weight": attn.k_proj.weight.detach()[kv], p + "k_proj.bias": attn.k_proj.bias.detach()[kv],
                p + "v_proj.weight": attn.v_proj.weight.detach()[kv], p + "v_proj.bias": attn.v_proj.bias.detach()[kv],
                p + "o_proj.weight": attn.o_proj.weight.detach()[:, q]}
    assert_selects(model, attention_head_params(model, 0, head), expected)


def test_llama_head_masks_pick_the_weights_the_head_uses():
    """Semantics, not just indices: changing head 3's masked q_proj rows changes only head 3's attention output
    (o_proj's input columns of that head); changing its k_proj/v_proj rows changes its KV group, heads 2 and 3."""
    model = llama()
    attn = model.model.layers[0].self_attn
    masks = {k.removeprefix("model.layers.0.self_attn."): m for k, m in attention_head_params(model, 0, 3).items()}
    ids = torch.randint(0, 12, (2, 6), generator=torch.Generator().manual_seed(0))
    captured = []
    hook = attn.o_proj.register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach().clone()))
    model(input_ids=ids)
    for group in (["q_proj"], ["k_proj", "v_proj"]):
        with torch.no_grad():
            for name in group:
                w = getattr(attn, name).weight
                w.copy_(torch.where(masks[name + ".weight"], torch.randn_like(w), w))
        model(input_ids=ids)
    hook.remove()
    per_head = [(captured[i + 1] - captured[i]).abs().reshape(2, 6, 4, 4).amax(dim=(0, 1, 3)) for i in (0, 1)]
    assert per_head[0][3] > 1e-3 and torch.all(per_head[0][:3] == 0), per_head[0]
    assert torch.all(per_head[1][2:] > 1e-3) and torch.all(per_head[1][:2] == 0), per_head[1]


# ---- (b) a head that is an independent block ------------------------------------------------------------

class LinearInAttentionWeights(nn.Module):
    """y = X · vec(θ) where θ are the weights of an nn.MultiheadAttention (E=4, 2 heads): a least-squares
    regression linear in every attention weight, so any set of entries is a quadratic block."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, dtype=F64)

    def forward(self, x):
        return x @ torch.cat([p.reshape(-1) for p in self.attn.parameters()])


def head_block_model_and_data(n=600, seed=0):
    """The model at its least-squares minimum on orthogonal design columns (so the Hessian 2XᵀX/n is diagonal)."""
    g = torch.Generator().manual_seed(seed)
    model = LinearInAttentionWeights()
    D = sum(p.numel() for p in model.parameters())
    q, _ = torch.linalg.qr(torch.randn(n, D, generator=g, dtype=F64))
    scale = 0.7 + 0.3 * torch.rand(D, generator=g, dtype=F64)
    x = q * math.sqrt(n) * scale
    y = x @ torch.randn(D, generator=g, dtype=F64) + 0.1 * torch.randn(n, generator=g, dtype=F64)
    sol = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(sol, model.parameters())
    return model, (x, y), 2 * scale ** 2


def test_head_restricted_llc_of_an_independent_block_equals_its_lambda():
    model, data, curv = head_block_model_and_data()
    masks = attention_head_params(model, 0, 1)
    flat_mask = torch.cat([masks.get("attn." + n, torch.zeros_like(p, dtype=torch.bool)).reshape(-1)
                           for n, p in model.attn.named_parameters()])
    k = int(flat_mask.sum())
    assert k == 3 * 2 * 4 + 3 * 2 + 4 * 2  # q, k, v rows of 2 × 4, their biases, 2 output columns
    n, eps, gamma = 600, 5e-4, 1.0
    kw = dict(loss="mse", step_size=eps, localization=gamma, num_chains=8, num_draws=800, num_burnin=200,
              progress=False, seed=0)
    r = estimate_llc(model, data, params=masks, **kw)
    exact = gaussian_sgld_target(curv[flat_mask].tolist(), n / math.log(n), gamma, eps)
    assert r.config["d"] == k
    assert abs(exact - k / 2) < 0.03 * k / 2  # the finite-γ, finite-ε terms are small here: λ = k/2 = 19
    assert abs(r.llc_mean - exact) < 4 * r.mcse, (r.llc_mean, exact, r.mcse)

    # the head's entries as a model of their own (same order, same seeds) give the same draws
    fm = FlatModel(model, masks)
    x, _ = data
    rest = torch.cat([p.detach().reshape(-1) for p in model.parameters()])[~flat_mask]

    class HeadAlone(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(fm.w_star.clone())

        def forward(self, x):
            return x[:, flat_mask] @ self.w + x[:, ~flat_mask] @ rest

    short = {**kw, "num_draws": 40, "num_burnin": 10, "check_stability": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)  # 40 draws: R-hat is not the point here
        alone, masked = estimate_llc(HeadAlone(), data, **short), estimate_llc(model, data, params=masks, **short)
    np.testing.assert_allclose(alone.llc_trace, masked.llc_trace, rtol=1e-6, atol=1e-9)


# ---- (c) patterns and errors ----------------------------------------------------------------------------

def test_glob_patterns_select_parameters_in_order():
    model = gpt2()
    names = [n for n, _ in model.named_parameters()]
    layer0 = [n for n in names if n.startswith("transformer.h.0.")]
    assert FlatModel(model, "transformer.h.0.*").names == layer0  # one string is one pattern
    fm = FlatModel(model, ["transformer.wte.weight", "transformer.h.0.*", "transformer.h.0.ln_1.weight"])
    assert fm.names == ["transformer.wte.weight"] + layer0  # the items' order; each parameter once
    assert fm.d == sum(p.numel() for n, p in model.named_parameters() if n in fm.names)
    assert FlatModel(model, ["*.c_attn.*"]).names == [n for n in names if ".c_attn." in n]
    assert FlatModel(model, lambda n: n.endswith("bias")).names == [n for n in names if n.endswith("bias")]
    assert FlatModel(model, ["transformer.h.?.attn.c_proj.bias"]).names == [
        "transformer.h.0.attn.c_proj.bias", "transformer.h.1.attn.c_proj.bias"]


def test_pattern_and_mask_errors():
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"unknown parameter name\(s\) \['layer.\*'\].*glob.*\['weight', 'bias'\]"):
        FlatModel(lin, ["weight", "layer.*"])
    with pytest.raises(TypeError, match="names or glob patterns"):
        FlatModel(lin, ["weight", 3])
    with pytest.raises(ValueError, match=r"shape \(3, 2\).*\(2, 3\)"):
        FlatModel(lin, {"weight": torch.ones(3, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="dtype torch.float32.*boolean"):
        FlatModel(lin, {"weight": torch.ones(2, 3)})
    with pytest.raises(ValueError, match="selects no entry"):
        FlatModel(lin, {"weight": torch.zeros(2, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"unknown parameter name\(s\) \['w'\]"):
        FlatModel(lin, {"w": torch.ones(2, dtype=torch.bool)})
    full = FlatModel(lin, {"weight": torch.ones(2, 3, dtype=torch.bool), "bias": torch.tensor([False, True])})
    assert full.masks.keys() == {"bias"} and full.selection == ["weight", "bias[1 of 2]"] and full.d == 7


def test_attention_head_params_errors():
    model = gpt2()
    with pytest.raises(ValueError, match=r"layer=2 is out of range.*layers 0\.\.1.*transformer\.h\.1\.attn"):
        attention_head_params(model, 2, 0)
    with pytest.raises(ValueError, match=r"head=2 is out of range.*2 heads, 0\.\.1"):
        attention_head_params(model, 0, 2)
    with pytest.raises(TypeError, match="layer must be an int"):
        attention_head_params(model, 0.0, 0)

    class MyAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.out = nn.Linear(4, 12), nn.Linear(4, 4)

    with pytest.raises(ValueError, match=r"MyAttention, whose layout is not recognised.*params=\{name: bool mask\}"):
        attention_head_params(nn.Sequential(MyAttention()), 0, 0)
    with pytest.raises(ValueError, match="no attention module of a recognised layout"):
        attention_head_params(nn.Linear(2, 2), 0, 0)


# ---- (d) the masked forward is the module's forward -----------------------------------------------------

def test_gpt2_masked_vmapped_forward_and_gradient_equal_the_module():
    model = gpt2()
    masks = {**attention_head_params(model, 0, 1), **attention_head_params(model, 1, 0)}
    fm = FlatModel(model, masks)
    ids = torch.randint(0, 12, (3, 6), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids}
    delta = 0.1 * torch.randn(2, fm.d, generator=torch.Generator().manual_seed(1))
    w = torch.cat([fm.w_star[None], fm.w_star + delta])  # (chains, d): w* and two points off it
    with attention_for_vmap(model):
        out = vmap(lambda v: fm.outputs(v, batch))(w)
        ref = model(input_ids=ids).logits.detach()
        torch.testing.assert_close(out[0], ref, rtol=0, atol=1e-6)
        # off w*: the same as the module with the masked entries replaced by hand
        params = dict(model.named_parameters())
        saved = {n: params[n].detach().clone() for n in masks}
        for c in (1, 2):
            with torch.no_grad():
                for name, chunk in zip(fm.names, torch.split(w[c], fm.numels)):
                    params[name][masks[name]] = chunk
            torch.testing.assert_close(out[c], model(input_ids=ids).logits.detach(), rtol=1e-5, atol=1e-6)
            with torch.no_grad():
                for name in masks:
                    params[name].copy_(saved[name])
        # the gradient with respect to w is the module's gradient at the masked entries
        wg = fm.w_star.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fm.outputs(wg, batch).square().sum(), wg)
        model.zero_grad()
        model(input_ids=ids).logits.square().sum().backward()
    want = torch.cat([params[n].grad[masks[n]] for n in fm.names])
    torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-6)
    assert fm.selection == [f"{n}[{int(m.sum())} of {m.numel()}]" for n, m in masks.items()]


@pytest.mark.parametrize("build", [gpt2, llama], ids=["gpt2", "llama"])
def test_head_llc_of_a_language_model_runs_vectorised(build):
    model = build()
    ids = torch.randint(2, 12, (64, 8), generator=torch.Generator().manual_seed(0))
    masks = attention_head_params(model, 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)  # 8 draws: a smoke test, not an estimate
        r = estimate_llc(model, {"input_ids": ids}, loss="causal_lm", params=masks, num_chains=2, num_draws=8,
                         num_burnin=2, batch_size=16, step_size=1e-6, progress=False, check_stability=False)
    assert r.config["vectorized"] and r.config["d"] == sum(int(m.sum()) for m in masks.values())
    assert np.isfinite(r.llc_mean)
