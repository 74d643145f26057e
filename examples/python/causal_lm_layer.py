"""A one-block causal language model whose attention is sparcl's
sliding-window kernel (forward and backward) through sparcl.torch.

Trains for a few steps with Adam on random sequences that repeat a random
period-P pattern (the next token is the one P positions back, inside the
window), printing the loss as it falls, then checks the sparcl layer against
PyTorch's dense scaled_dot_product_attention with the same boolean mask:
the logits and every parameter's gradient.

    SPARCL_LIBRARY=build/libsparcl.so PYTHONPATH=python \
        python3 examples/python/causal_lm_layer.py
"""

import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import sparcl
import sparcl.conventions
import sparcl.torch


class Attention(nn.Module):
    """Grouped-query self-attention over a fixed sparcl layout; backend
    "sparcl" runs sparcl.torch.attention, "sdpa" PyTorch's dense kernel with
    the layout's mask (the reference)."""

    def __init__(self, d_model, q_heads, kv_heads, layout, ctx):
        super().__init__()
        self.q_heads, self.kv_heads = q_heads, kv_heads
        self.head_dim = d_model // q_heads
        self.q = nn.Linear(d_model, q_heads * self.head_dim, bias=False)
        self.kv = nn.Linear(d_model, 2 * kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(q_heads * self.head_dim, d_model, bias=False)
        self.layout, self.ctx = layout, ctx
        self.register_buffer("mask", torch.from_numpy(layout.mask()), persistent=False)
        self.backend = "sparcl"

    def forward(self, x):
        b, s, _ = x.shape
        q = self.q(x).view(b, s, self.q_heads, self.head_dim)  # [B, S, H, D]
        k, v = self.kv(x).view(b, s, 2, self.kv_heads, self.head_dim).unbind(2)
        if self.backend == "sparcl":
            y = sparcl.torch.attention(q, k, v, self.layout, tensor_layout="BSHD", ctx=self.ctx)
        else:
            group = self.q_heads // self.kv_heads
            qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
            kt, vt = kt.repeat_interleave(group, 1), vt.repeat_interleave(group, 1)
            y = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=self.mask).transpose(1, 2)
        return self.o(y.reshape(b, s, -1))


class CausalLM(nn.Module):
    def __init__(self, vocab, seq_len, d_model, q_heads, kv_heads, layout, ctx):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, q_heads, kv_heads, layout, ctx)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens):
        x = self.tok(tokens) + self.pos(torch.arange(tokens.shape[1]))
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x))


def batch(gen, n, seq_len, vocab, period):
    """Random sequences repeating a random pattern of `period` tokens."""
    pattern = torch.randint(vocab, (n, period), generator=gen)
    seqs = pattern.repeat(1, seq_len // period + 2)[:, : seq_len + 1]
    return seqs[:, :-1], seqs[:, 1:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--window", type=int, default=16, help="HF-style sliding_window W")
    ap.add_argument("--period", type=int, default=5)
    args = ap.parse_args()

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    vocab, d_model, q_heads, kv_heads, batch_size = 64, 64, 4, 2, 8
    ctx = sparcl.Context()
    # Mistral-style sliding_window=W: each token sees itself and the W-1 before.
    layout = sparcl.conventions.sliding_window(ctx, args.seq_len, args.window)
    print(
        "sliding_window=%d -> sparcl window left=%d right=0; density %.3f of %dx%d"
        % (args.window, args.window - 1, layout.mask().mean(), args.seq_len, args.seq_len)
    )
    model = CausalLM(vocab, args.seq_len, d_model, q_heads, kv_heads, layout, ctx)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    print("chance level: ln(%d) = %.4f" % (vocab, math.log(vocab)))
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = batch(gen, batch_size, args.seq_len, vocab, args.period)
        loss = F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 1 or step % 5 == 0:
            print("step %3d  loss %.4f" % (step, loss.item()))
    print("%d steps in %.2f s" % (args.steps, time.perf_counter() - start))

    # The trained layer against PyTorch's dense attention with the same mask.
    x, y = batch(gen, batch_size, args.seq_len, vocab, args.period)
    results = {}
    for backend in ("sparcl", "sdpa"):
        model.attn.backend = backend
        model.zero_grad()
        logits = model(x)
        F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1)).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results[backend] = (logits.detach(), grads)
    (lg_s, g_s), (lg_d, g_d) = results["sparcl"], results["sdpa"]
    print("sparcl vs dense SDPA (same mask): logits max |diff| %.2e" % (lg_s - lg_d).abs().max())
    for name in ("attn.q.weight", "attn.kv.weight", "attn.o.weight", "tok.weight"):
        print("  grad %-15s max |diff| %.2e  (max |grad| %.2e)"
              % (name, (g_s[name] - g_d[name]).abs().max(), g_d[name].abs().max()))
    diffs = {n: (g_s[n] - g_d[n]).abs().max().item() for n in g_s}
    worst = max(diffs, key=diffs.get)
    print("  all %d parameter gradients: max |diff| %.2e (%s)" % (len(diffs), diffs[worst], worst))
    sparcl.torch.clear_plan_cache()
    ctx.close()


if __name__ == "__main__":
    main()
