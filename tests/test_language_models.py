"""Language models: tiny HuggingFace GPT-2 and LLaMA models built from a config (no download) and
PyTorch's own ``nn.TransformerEncoder``, trained a few steps on a synthetic copy task, then the LLC
with ``loss="causal_lm"`` / ``"token_cross_entropy"`` from dict data. The chains must run vectorised
(no loop fallback, no missing-batching-rule warning), and the built-in loss must give the same draws
as the same loss written with ``evaluate=``."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from slt_basins import LLCWarning, VmapFallbackWarning, estimate_llc

transformers = pytest.importorskip("transformers")

VOCAB, T, N = 12, 8, 128
RUN = dict(num_chains=2, num_draws=12, num_burnin=4, batch_size=16, step_size=1e-5, localization=100.0,
           progress=False, check_stability=False)


def copy_task(seed=0):
    """Sequences [a, b, c, d, a, b, c, d]: the second half copies the first (an induction-style task)."""
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(2, VOCAB, (N, T // 2), generator=g)
    ids = torch.cat([first, first], 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def train(model, data, steps=30):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(steps):
        out = model(input_ids=data["input_ids"][:32], labels=data["input_ids"][:32])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return model.eval()


def quiet_run(model, data, **kw):
    """estimate_llc with every warning captured; fails on a loop fallback or a missing batching rule."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = estimate_llc(model, data, **{**RUN, **kw})
    bad = [str(w.message)[:120] for w in caught
           if issubclass(w.category, VmapFallbackWarning) or "batching rule" in str(w.message)]
    assert not bad, bad
    assert r.config["vectorized"]
    return r


def hf_causal_lm(evaluate_model, batch):
    return evaluate_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["input_ids"]).loss


def gpt2():
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=VOCAB, n_positions=16,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


def llama():
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


@pytest.mark.parametrize("build", [gpt2, llama], ids=["gpt2", "llama"])
def test_hf_causal_lm_is_vectorised_and_equals_evaluate(build):
    data = copy_task()
    model = train(build(), data)
    impl = model.config._attn_implementation
    d = sum(p.numel() for p in model.parameters())
    assert 1000 < d < 20_000
    r = quiet_run(model, data, loss="causal_lm")
    assert model.config._attn_implementation == impl  # the user's attention setting is restored
    ev = quiet_run(model, data, evaluate=hf_causal_lm)
    assert r.config["loss"] == "causal_lm" and ev.config["loss"] == "evaluate"
    # the same draws: our causal_lm weights sequences equally, HF weights tokens; with equal counts they agree
    np.testing.assert_allclose(ev.llc_trace, r.llc_trace, rtol=1e-3, atol=1e-3 * np.abs(r.llc_trace).max())
    assert np.isfinite(r.llc_mean) and r.mcse > 0


class TinyEncoderLM(nn.Module):
    """Embedding → nn.TransformerEncoder (eval mode uses PyTorch's fused fast path) → logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(VOCAB, 16)
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.out = nn.Linear(16, VOCAB)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(T - 1))

    def forward(self, input_ids):
        return self.out(self.enc(self.emb(input_ids), mask=self.mask, is_causal=True))


def test_transformer_encoder_in_eval_mode_is_vectorised_and_equals_evaluate():
    ids = copy_task()["input_ids"]
    data = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}  # targets already aligned: token_cross_entropy
    model = TinyEncoderLM()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(data["input_ids"]).reshape(-1, VOCAB), data["labels"].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    fast = torch.backends.mha.get_fastpath_enabled()
    r = quiet_run(model, data, loss="token_cross_entropy")
    assert torch.backends.mha.get_fastpath_enabled() == fast

    def ev(m, batch):
        logits = m(batch["input_ids"])
        return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch["labels"].reshape(-1))

    e = quiet_run(model, data, evaluate=ev)
    np.testing.assert_allclose(e.llc_trace, r.llc_trace, rtol=1e-4, atol=1e-4 * np.abs(r.llc_trace).max())


def test_lm_logits_into_cross_entropy_are_refused_naming_token_cross_entropy():
    ids = copy_task()["input_ids"]  # logits (b, seq, vocab), targets (b, seq): only the last-axis reading fits
    model = TinyEncoderLM()
    with pytest.raises(ValueError, match="token_cross_entropy"):
        estimate_llc(model, {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}, loss="cross_entropy", **RUN)


def test_dropout_in_train_mode_is_refused():
    model = gpt2().train()
    model.config.attn_pdrop = 0.1
    model.transformer.h[0].attn.attn_dropout.p = 0.1
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        estimate_llc(model, copy_task(), loss="causal_lm", **RUN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCWarning)
        estimate_llc(model.eval(), copy_task(), loss="causal_lm", **RUN)  # eval mode: accepted
