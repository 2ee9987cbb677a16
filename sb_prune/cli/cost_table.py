"""``sb-prune cost-table``: time matrix shapes dense and factorised.

Authors
 * sb_prune developers
"""

import json
from pathlib import Path


def _shape(text):
    """``"256x1024"`` -> ``(256, 1024)`` (in x out)."""
    try:
        in_features, out_features = (int(n) for n in text.lower().split("x"))
    except ValueError:
        raise ValueError(
            f"--shapes: expected IN x OUT such as 256x1024, got {text!r}"
        ) from None
    return in_features, out_features


def add_arguments(parser):
    """Declare the ``sb-prune cost-table`` options."""
    parser.add_argument(
        "--shapes",
        nargs="+",
        required=True,
        help="matrix shapes IN x OUT, e.g. 256x1024 1024x256",
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=250,
        help="rows per product: batch x frames at inference (default 250, "
        "10 s after 4x frame stacking)",
    )
    parser.add_argument("--out", required=True, help="JSON file to write")


def main(args):
    """Measure and write the table (for LowRankCompression's cost_table)."""
    from sb_prune.methods.low_rank.speed import measure_cost_table

    table = measure_cost_table(
        [_shape(s) for s in args.shapes], tokens=args.tokens
    )
    Path(args.out).write_text(json.dumps(table, indent=1))
    for key, entry in table["shapes"].items():
        faster = [r for r, t in entry["ranks"].items() if t < entry["dense"]]
        print(f"{key}: faster than dense at ranks {faster or 'none'}")
