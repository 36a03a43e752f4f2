"""Masks that select one attention head's weights, for the weight-refined LLC.

The *weight-refined* LLC (Wang, Farrugia-Roberts, Hoogland, Carroll, Wei, Murfet 2024,
"Differentiation and specialization of attention heads via the refined local learning coefficient",
arXiv:2410.02984) samples only some weights of a trained model and holds the rest at w*. Passing
``params={name: bool mask}`` to :func:`slt_basins.estimate_llc` does that for any set of entries;
:func:`attention_head_params` builds the masks of one attention head, since a head's weights are
slices of larger fused tensors.

Recognised layouts (anything else is an error that says to pass masks):

* ``nn.MultiheadAttention`` (packed ``in_proj_weight`` or separate ``q/k/v_proj_weight``);
* GPT-2-style attention: a module with ``Conv1D`` children ``c_attn`` (fused q, k, v) and ``c_proj``
  and a ``num_heads`` attribute (HuggingFace ``GPT2Attention``; for cross-attention also ``q_attn``);
* LLaMA-style attention: ``nn.Linear`` children ``q_proj``, ``k_proj``, ``v_proj`` and ``o_proj`` and a
  ``head_dim`` attribute (HuggingFace LLaMA, Mistral, Qwen2, ...), with grouped-query attention.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["attention_modules", "attention_head_params"]

_RECOGNISED = ("nn.MultiheadAttention, GPT-2-style attention (Conv1D c_attn/c_proj) and LLaMA-style attention "
               "(nn.Linear q_proj/k_proj/v_proj/o_proj)")
_PASS_MASKS = ("pass params={name: bool mask} (True for the entries to sample, each mask of its parameter's "
               "shape) to estimate_llc instead")


def _layout(module: nn.Module) -> Optional[str]:
    """'mha', 'gpt2' or 'llama' for a recognised attention module, else None."""
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    c_attn, c_proj = getattr(module, "c_attn", None), getattr(module, "c_proj", None)
    if type(c_attn).__name__ == "Conv1D" and type(c_proj).__name__ == "Conv1D":
        return "gpt2"
    if all(isinstance(getattr(module, a, None), nn.Linear) for a in ("q_proj", "k_proj", "v_proj", "o_proj")):
        return "llama"
    return None


def attention_modules(model: nn.Module) -> list[str]:
    """The names of ``model``'s attention modules of a recognised layout, in ``model.modules()`` order.

    That order (registration order, depth first) is what ``layer`` counts in
    :func:`attention_head_params`: for HuggingFace models and ``nn.TransformerEncoder`` it is the order
    of the blocks; in an ``nn.TransformerDecoderLayer`` the self-attention comes before the
    cross-attention. Attention modules of other layouts are not listed (nor counted).

    Example:
        >>> enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2, enable_nested_tensor=False)
        >>> attention_modules(enc)
        ['layers.0.self_attn', 'layers.1.self_attn']
    """
    return [name for name, m in model.named_modules() if _layout(m) is not None]


def attention_head_params(model: nn.Module, layer: int, head: int) -> dict[str, torch.Tensor]:
    """Boolean masks of the query, key, value and output weights of one attention head.

    Returns ``{full parameter name: bool mask of the parameter's shape}`` (names as in
    ``model.named_parameters()``), ready for ``estimate_llc(model, data, params=...)``: the LLC of
    the head's weights with every other weight held at w*, the weight-refined LLC of Wang et al.
    (2024, arXiv:2410.02984). ``layer`` counts the recognised attention modules in
    ``model.modules()`` order (see :func:`attention_modules`); ``head`` counts that module's query
    heads. With head dimension dh and width E, the masks are:

    * ``nn.MultiheadAttention``: rows [h·dh, (h+1)·dh) of the q, k and v blocks of ``in_proj_weight``
      (rows offset by 0, E and 2E; or of ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``),
      the same entries of ``in_proj_bias`` (and of ``bias_k``/``bias_v`` when present), and columns
      [h·dh, (h+1)·dh) of ``out_proj.weight``.
    * GPT-2 (``Conv1D`` stores ``(in, out)``, y = x W + b): columns [h·dh, …), [E + h·dh, …) and
      [2E + h·dh, …) of ``c_attn.weight`` and those entries of ``c_attn.bias`` (for cross-attention:
      the head's columns of ``q_attn`` and its k, v columns of ``c_attn``), and rows [h·dh, (h+1)·dh)
      of ``c_proj.weight``.
    * LLaMA: rows of head h in ``q_proj.weight``, rows of key-value head g = h // (heads per KV head)
      in ``k_proj.weight`` and ``v_proj.weight`` and columns of head h in ``o_proj.weight``; biases'
      matching entries when present. With grouped-query attention a KV head is shared by a group of
      query heads, so the k and v masks of every head of a group are the same (the group's).

    An output projection's bias is shared by all heads, so it is not part of any head's masks.

    Raises:
        ValueError: if the model has no attention module of a recognised layout (pass
            ``params={name: mask}`` instead), or ``layer`` or ``head`` is out of range (the message
            gives the valid ranges).

    Example:
        >>> mha = nn.MultiheadAttention(4, 2)
        >>> masks = attention_head_params(mha, 0, 1)
        >>> {name: int(m.sum()) for name, m in masks.items()}
        {'in_proj_weight': 24, 'in_proj_bias': 6, 'out_proj.weight': 8}
        >>> masks["in_proj_weight"][:, 0].nonzero().flatten().tolist()  # rows of head 1's q, k, v
        [2, 3, 6, 7, 10, 11]
    """
    found = [(name, m) for name, m in model.named_modules() if _layout(m) is not None]
    if not found:
        other = sorted({type(m).__name__ for m in model.modules() if "attention" in type(m).__name__.lower()})
        seen = f" (it has {', '.join(other)}, whose layout is not recognised)" if other else ""
        raise ValueError(f"found no attention module of a recognised layout in {type(model).__name__}{seen}. "
                         f"Recognised: {_RECOGNISED}. For other layouts {_PASS_MASKS}.")
    for arg, value in (("layer", layer), ("head", head)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{arg} must be an int; got {value!r}.")
    if not 0 <= layer < len(found):
        names = ", ".join(n or "<model>" for n, _ in found)
        raise ValueError(f"layer={layer} is out of range: the model has {len(found)} attention module(s) of a "
                         f"recognised layout, layers 0..{len(found) - 1} ({names}).")
    prefix, module = found[layer]
    build = {"mha": _mha_masks, "gpt2": _gpt2_masks, "llama": _llama_masks}[_layout(module)]
    local = build(module, head, f"layer {layer} ({prefix or type(module).__name__})")
    dot = prefix + "." if prefix else ""
    return {dot + name: mask for name, mask in local.items()}


def _band(p: torch.Tensor, dim: int, start: int, size: int) -> torch.Tensor:
    """A bool mask of p's shape, True on indices [start, start + size) along ``dim``."""
    m = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
    m.narrow(dim, start, size).fill_(True)
    return m


def _check_head(head: int, heads: int, where: str) -> None:
    if not 0 <= head < heads:
        raise ValueError(f"head={head} is out of range: {where} has {heads} heads, 0..{heads - 1}.")


def _mha_masks(m: nn.MultiheadAttention, h: int, where: str) -> dict[str, torch.Tensor]:
    _check_head(h, m.num_heads, where)
    dh, E = m.head_dim, m.embed_dim
    out = {}
    if m.in_proj_weight is not None:
        out["in_proj_weight"] = _band(m.in_proj_weight, 0, h * dh, dh) | _band(m.in_proj_weight, 0, E + h * dh, dh) \
            | _band(m.in_proj_weight, 0, 2 * E + h * dh, dh)
    else:
        for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            out[name] = _band(getattr(m, name), 0, h * dh, dh)
    if m.in_proj_bias is not None:
        b = m.in_proj_bias
        out["in_proj_bias"] = _band(b, 0, h * dh, dh) | _band(b, 0, E + h * dh, dh) | _band(b, 0, 2 * E + h * dh, dh)
    for name in ("bias_k", "bias_v"):
        if getattr(m, name, None) is not None:
            out[name] = _band(getattr(m, name), -1, h * dh, dh)
    out["out_proj.weight"] = _band(m.out_proj.weight, 1, h * dh, dh)
    return out


def _gpt2_masks(m: nn.Module, h: int, where: str) -> dict[str, torch.Tensor]:
    heads = getattr(m, "num_heads", None)
    E = m.c_proj.weight.shape[0]
    cross = getattr(m, "q_attn", None) is not None
    fused = 2 * E if cross else 3 * E
    if not isinstance(heads, int) or heads < 1 or E % heads or tuple(m.c_attn.weight.shape) != (E, fused):
        raise ValueError(f"{where} looks like GPT-2 attention (c_attn/c_proj) but its layout is not recognised "
                         f"(num_heads={heads!r}, c_attn.weight {tuple(m.c_attn.weight.shape)}, expected ({E}, "
                         f"{fused})); {_PASS_MASKS}.")
    _check_head(h, heads, where)
    dh = E // heads
    offsets = (E, 2 * E) if not cross else (0, E)  # the k and v column blocks of c_attn
    out = {}
    if cross:
        out["q_attn.weight"] = _band(m.q_attn.weight, 1, h * dh, dh)
        out["q_attn.bias"] = _band(m.q_attn.bias, 0, h * dh, dh)
    starts = ([h * dh] if not cross else []) + [o + h * dh for o in offsets]
    for name, dim in (("weight", 1), ("bias", 0)):
        p = getattr(m.c_attn, name)
        mask = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
        for s in starts:
            mask |= _band(p, dim, s, dh)
        out["c_attn." + name] = mask
    out["c_proj.weight"] = _band(m.c_proj.weight, 0, h * dh, dh)
    return out


def _llama_masks(m: nn.Module, h: int, where: str) -> dict[str, torch.Tensor]:
    dh = getattr(m, "head_dim", None)
    if dh is None:
        dh = getattr(getattr(m, "config", None), "head_dim", None)
    q, k, v, o = m.q_proj, m.k_proj, m.v_proj, m.o_proj
    ok = isinstance(dh, int) and dh > 0 and q.out_features % dh == 0 and k.out_features % dh == 0 \
        and k.out_features == v.out_features and o.in_features == q.out_features
    heads, kv = (q.out_features // dh, k.out_features // dh) if ok else (0, 0)
    if not ok or kv == 0 or heads % kv:
        raise ValueError(f"{where} looks like LLaMA attention (q_proj/k_proj/v_proj/o_proj) but its layout is not "
                         f"recognised (head_dim={dh!r}, q_proj {q.out_features}, k_proj {k.out_features}, v_proj "
                         f"{v.out_features} outputs, o_proj {o.in_features} inputs); {_PASS_MASKS}.")
    _check_head(h, heads, where)
    g = h // (heads // kv)  # the key-value head that query head h reads
    out = {}
    for name, lin, start in (("q_proj", q, h * dh), ("k_proj", k, g * dh), ("v_proj", v, g * dh)):
        out[name + ".weight"] = _band(lin.weight, 0, start, dh)
        if lin.bias is not None:
            out[name + ".bias"] = _band(lin.bias, 0, start, dh)
    out["o_proj.weight"] = _band(o.weight, 1, h * dh, dh)
    return out
