#!/usr/bin/env python3
"""lsh-pattern-svg.py -- draws the attention pattern of LSH attention (README,
"LSH attention (Reformer)") from the buckets of each hash round.

The buckets are an input (by default the README's example: two rounds of 16
tokens, 4 buckets, as sparcl_reference_lsh_order() prints them); the script
does the rest as sparcl.h defines it: a stable sort by (bucket, position),
chunks of --chunk sorted positions, and each query attending its own chunk
and the one before, never itself (causal with --causal: only j <= i).

It draws, per round, the sorted order cut into chunks, and the query x key
matrix over original positions coloured by the round(s) that attend it.

usage: scripts/lsh-pattern-svg.py [--buckets 0130211130012000,1311332212332313]
                                  [--chunk 4] [--causal] [-o lsh_pattern.svg]
"""
import argparse

ROUND_COLOURS = ["#1f5fbf", "#e07b00"]
BOTH_COLOUR = "#7a3fa0"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def attended(buckets, chunk, causal):
    """The set of (query, key) pairs one round attends, and its sorted order."""
    n = len(buckets)
    order = sorted(range(n), key=lambda i: (buckets[i], i))
    pairs = set()
    for p, i in enumerate(order):
        c = p // chunk
        for kp in range(max(0, (c - 1) * chunk), min(n, (c + 1) * chunk)):
            j = order[kp]
            if j != i and (not causal or j <= i):
                pairs.add((i, j))
    return order, pairs


def draw(rounds, chunk, causal):
    n = len(rounds[0])
    cell, left, top = 22, 60, 40
    strip_h = 34
    grid_top = top + len(rounds) * strip_h + 40
    width = left + n * cell + 190
    height = grid_top + n * cell + 50
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="20" font-weight="bold">LSH attention: {len(rounds)} rounds, '
        f'{n} tokens, chunks of {chunk}{", causal" if causal else ""}</text>',
    ]
    pair_sets = []
    for r, buckets in enumerate(rounds):
        order, pairs = attended(buckets, chunk, causal)
        pair_sets.append(pairs)
        y = top + r * strip_h
        out.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">round {r}</text>')
        for p, i in enumerate(order):
            x = left + p * cell
            out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="white" '
                       f'stroke="{ROUND_COLOURS[r % 2]}"/>')
            out.append(f'<text x="{x + cell / 2}" y="{y + 15}" text-anchor="middle">'
                       f'{i}{LETTERS[buckets[i] % 26]}</text>')
        for c in range(chunk, n, chunk):
            x = left + c * cell
            out.append(f'<line x1="{x}" y1="{y - 3}" x2="{x}" y2="{y + cell + 3}" '
                       'stroke="black" stroke-width="2.5"/>')
    out.append(f'<text x="{left}" y="{top + len(rounds) * strip_h + 6}">sorted by (bucket, '
               'position): position + bucket letter; thick lines cut the chunks</text>')
    # The query x key matrix over original positions.
    for i in range(n):
        out.append(f'<text x="{left - 6}" y="{grid_top + i * cell + 15}" '
                   f'text-anchor="end">{i}</text>')
        out.append(f'<text x="{left + i * cell + cell / 2}" y="{grid_top - 4}" '
                   f'text-anchor="middle">{i}</text>')
        for j in range(n):
            hit = [r for r, s in enumerate(pair_sets) if (i, j) in s]
            fill = "white" if not hit else (ROUND_COLOURS[hit[0] % 2] if len(hit) == 1
                                            else BOTH_COLOUR)
            out.append(f'<rect x="{left + j * cell}" y="{grid_top + i * cell}" width="{cell}" '
                       f'height="{cell}" fill="{fill}" stroke="#cccccc"/>')
    out.append(f'<text x="{left + n * cell / 2}" y="{grid_top + n * cell + 18}" '
               'text-anchor="middle">key position j</text>')
    out.append(f'<text x="16" y="{grid_top + n * cell / 2}" text-anchor="middle" '
               f'transform="rotate(-90 16 {grid_top + n * cell / 2})">query position i</text>')
    lx = left + n * cell + 16
    legend = [(ROUND_COLOURS[r % 2], f"round {r} only") for r in range(len(rounds))]
    legend.append((BOTH_COLOUR, "both rounds"))
    for k, (colour, label) in enumerate(legend):
        y = grid_top + k * 22
        out.append(f'<rect x="{lx}" y="{y}" width="14" height="14" fill="{colour}"/>')
        out.append(f'<text x="{lx + 20}" y="{y + 11}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buckets", default="0130211130012000,1311332212332313",
                    help="one string of bucket digits per round, comma-separated")
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("-o", "--output", default="lsh_pattern.svg")
    a = ap.parse_args()
    rounds = [[int(ch) for ch in s] for s in a.buckets.split(",")]
    if len({len(r) for r in rounds}) != 1 or a.chunk < 1:
        ap.error("rounds must have the same length and chunk must be >= 1")
    with open(a.output, "w") as f:
        f.write(draw(rounds, a.chunk, a.causal))


if __name__ == "__main__":
    main()
