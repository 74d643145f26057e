"""Model-library attention conventions mapped to sparcl layouts.

Model configs say "window" in different ways, and passing their number
straight to ``Layout.window(left=...)`` is off by one or by a factor of two.
Each helper below states the library's rule and the sparcl layout that
attends exactly the same keys.  The mappings were checked against the
attention code of Hugging Face transformers (5.24); see
``shared/notes/conventions.md`` in the sparcl repository.

sparcl's window rule (sparcl.h, sparcl_layout_init_window): query i attends
key j iff ``-left <= j - p <= right`` with ``p = i + kv_len - q_len`` (the
query's position in the key sequence, bottom-right aligned as
FlashAttention; p = i when q_len == kv_len).

============================================  ==================================
library parameter                             sparcl
============================================  ==================================
Mistral / Qwen2 ``sliding_window = W``        ``sliding_window(ctx, S, W)``:
(key j iff ``p - W < j <= p``)                window left = W - 1, right = 0
GPT-Neo local layers ``window_size = W``      ``gpt_neo_local(ctx, S, W)``: the
(the same rule)                               same layout; scale = 1
Longformer ``attention_window = A``           ``longformer_window(ctx, S, A)``:
(A/2 keys on each side, A + 1 per row)        left = right = A/2, not causal
Llama / Qwen2 ``num_key_value_heads``         ``kv_heads``; `kv_head_for`
============================================  ==================================

Passing ``sliding_window`` itself as ``left`` attends one key too many in
every row (W + 1 keys instead of W).
"""

__all__ = [
    "GPT_NEO_SCALE",
    "sliding_window_extents",
    "sliding_window",
    "gpt_neo_local",
    "longformer_extents",
    "longformer_window",
    "kv_head_for",
]

#: GPT-Neo does not scale attention scores (transformers' GPTNeoSelfAttention
#: computes q k^T without dividing by sqrt(head_dim)): pass ``scale=1.0``.
GPT_NEO_SCALE = 1.0


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, got %s" % (name, type(value).__name__))
    if value < 1:
        raise ValueError("%s must be >= 1, got %d" % (name, value))
    return value


def sliding_window_extents(window):
    """(left, right) of sparcl's window for a Hugging Face ``sliding_window``.

    Mistral, Qwen2 (``config.sliding_window = W``) and GPT-Neo local layers
    (``config.window_size = W``) let query position p attend key j iff
    ``j > p - W and j <= p``: W keys, the current token included.  In sparcl
    that is ``left = W - 1, right = 0`` (causal by construction).
    Source: transformers' masking_utils, ``sliding_window_overlay``
    (``kv_idx > q_idx - sliding_window``) and'ed with ``causal_mask_function``
    (``kv_idx <= q_idx``); shared/notes/conventions.md.
    """
    window = _positive_int("window", window)
    return window - 1, 0


def sliding_window(ctx, seq_len, window, *, kv_len=None, heads=1, block=64):
    """sparcl.Layout for Mistral / Qwen2 ``sliding_window = window``.

    seq_len: query positions; kv_len: key positions (default seq_len; with a
    KV cache the queries are the last seq_len of kv_len positions, as in
    transformers).  Attends key j from query i iff ``p - window < j <= p``,
    p = i + kv_len - seq_len, i.e. ``Layout.window(left=window - 1,
    right=0)``.  A window >= kv_len is plain causal attention.  Mapping and
    source: `sliding_window_extents`.
    """
    import sparcl

    left, right = sliding_window_extents(window)
    if kv_len is None:
        kv_len = seq_len
    return sparcl.Layout.window(
        ctx, seq_len, kv_len, left=left, right=right, heads=heads, block=block
    )


def gpt_neo_local(ctx, seq_len, window_size, *, kv_len=None, heads=1, block=64):
    """sparcl.Layout for GPT-Neo's local attention layers
    (``config.window_size``): the same rule as Mistral's sliding window (key j
    iff ``p - window_size < j <= p``), so ``left = window_size - 1, right =
    0``.  GPT-Neo also leaves scores unscaled: call attention with
    ``scale=GPT_NEO_SCALE`` (1.0).  Source: transformers' GPTNeoSelfAttention,
    whose local bias ``tril(ones) xor tril(ones, -window_size)`` keeps
    ``i - window_size < j <= i``; conventions.md.
    """
    return sliding_window(ctx, seq_len, window_size, kv_len=kv_len, heads=heads, block=block)


def longformer_extents(attention_window):
    """(left, right) of sparcl's window for Longformer's ``attention_window``.

    Longformer's sliding attention of window A looks A/2 tokens to each side
    (``one_sided_attn_window_size = attention_window // 2``), A + 1 keys per
    row: ``left = right = A / 2``.  Longformer requires A even and positive.
    Source: transformers' LongformerSelfAttention
    (``one_sided_attn_window_size``); conventions.md.
    """
    attention_window = _positive_int("attention_window", attention_window)
    if attention_window % 2:
        raise ValueError(
            "attention_window must be even (Longformer requires it), got %d" % attention_window
        )
    half = attention_window // 2
    return half, half


def longformer_window(ctx, seq_len, attention_window, *, heads=1, block=64):
    """sparcl.Layout of Longformer's local (sliding) attention for
    ``attention_window = A``: query i attends key j iff ``|j - i| <= A / 2``
    (not causal).  Global tokens attend every key through separate
    projections in Longformer; for them use sparcl's Longformer layout and a
    second call with the global projections.  Mapping and source:
    `longformer_extents`.
    """
    import sparcl

    left, right = longformer_extents(attention_window)
    return sparcl.Layout.window(
        ctx, seq_len, seq_len, left=left, right=right, heads=heads, block=block
    )


def kv_head_for(q_head, q_heads, kv_heads):
    """The KV head that query head ``q_head`` reads under grouped-query
    attention (Llama / Qwen2 ``num_key_value_heads``): ``q_head // (q_heads
    // kv_heads)``, as transformers' ``repeat_kv`` and sparcl's ``kv_heads``
    (sparcl.Plan, sparcl.torch.attention with k/v of fewer heads).
    """
    q_heads = _positive_int("q_heads", q_heads)
    kv_heads = _positive_int("kv_heads", kv_heads)
    if q_heads % kv_heads:
        raise ValueError("kv_heads %d does not divide q_heads %d" % (kv_heads, q_heads))
    if not 0 <= q_head < q_heads:
        raise ValueError("q_head %d is not in [0, %d)" % (q_head, q_heads))
    return q_head // (q_heads // kv_heads)
