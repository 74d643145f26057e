"""Fixtures and NumPy float64 references shared by the sparcl tests.

The references here are written from the formulas in include/sparcl.h,
independently of sparcl's own double reference (which the tests use as a
second oracle): masked softmax attention from a token mask, and its
backward by hand (P, dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(dO*O)),
dQ = scale dS K, dK = scale dS^T Q).
"""

import math

import numpy as np
import pytest

import sparcl


@pytest.fixture(scope="session")
def ctx():
    with sparcl.Context() as c:
        yield c


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def full_mask(layout, q_heads, q_len, kv_len, causal=False):
    """[q_heads, q_len, kv_len] bools: the layout's heads (broadcast when it has
    one) and the causal flag; a dense mask without a layout."""
    if layout is None:
        m = np.ones((1, q_len, kv_len), dtype=bool)
    else:
        m = np.stack([layout.mask(h) for h in range(layout.heads)])
    m = np.broadcast_to(m, (q_heads, q_len, kv_len)).copy()
    if causal:
        i = np.arange(q_len)[:, None] + (kv_len - q_len)
        j = np.arange(kv_len)[None, :]
        m &= j <= i
    return m


def np_forward(q, k, v, mask, scale=None):
    """Masked softmax attention in float64: (out [B,Hq,S,D], lse [B,Hq,S])."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    B, Hq, S, D = q.shape
    Hk = k.shape[1]
    g = Hq // Hk
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = np.zeros(q.shape)
    lse = np.full((B, Hq, S), -np.inf)
    for b in range(B):
        for h in range(Hq):
            s = scale * q[b, h] @ k[b, h // g].T
            s = np.where(mask[h], s, -np.inf)
            m = s.max(axis=1, keepdims=True)
            live = np.isfinite(m[:, 0])
            p = np.where(mask[h], np.exp(s - np.where(live[:, None], m, 0.0)), 0.0)
            l = p.sum(axis=1)
            out[b, h, live] = (p[live] @ v[b, h // g]) / l[live, None]
            lse[b, h, live] = m[live, 0] + np.log(l[live])
    return out, lse


def np_backward(q, k, v, mask, dout, scale=None):
    """Gradients of np_forward: (dq, dk, dv) in float64."""
    q, k, v, dout = (x.astype(np.float64) for x in (q, k, v, dout))
    out, lse = np_forward(q, k, v, mask, scale)
    B, Hq, S, D = q.shape
    Hk = k.shape[1]
    g = Hq // Hk
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    dq, dk, dv = np.zeros(q.shape), np.zeros(k.shape), np.zeros(v.shape)
    for b in range(B):
        for h in range(Hq):
            kh = h // g
            s = scale * q[b, h] @ k[b, kh].T
            live = np.isfinite(lse[b, h])
            p = np.zeros_like(s)
            p[live] = np.where(mask[h][live], np.exp(s[live] - lse[b, h][live, None]), 0.0)
            dv[b, kh] += p.T @ dout[b, h]
            dp = dout[b, h] @ v[b, kh].T
            delta = (dout[b, h] * out[b, h]).sum(axis=1, keepdims=True)
            ds = p * (dp - delta)
            dq[b, h] = scale * ds @ k[b, kh]
            dk[b, kh] += scale * ds.T @ q[b, h]
    return dq, dk, dv


def assert_close(actual, expected, tol, what=""):
    actual = np.asarray(actual, dtype=np.float64)
    err = np.abs(actual - expected)
    bound = tol * (1.0 + np.abs(expected))
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(actual), finite), "%s: finiteness differs" % what
    bad = err[finite] > bound[finite]
    assert not bad.any(), "%s: max error %.3g (tolerance %.3g relative+absolute)" % (
        what, err[finite].max(), tol)
