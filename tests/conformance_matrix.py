"""The conformance matrix: which method works on which model family.

``MATRIX`` is the one statement of it: ``tests/test_conformance.py`` checks
every cell (a method that works on a family works exactly; one that does
not is refused with an error naming the method and the family) and
README.md shows it, rendered by :func:`render_table` (the test fails when
the README's table is not the rendering; ``python
tests/conformance_matrix.py`` rewrites it).

A row is a model family (``sb_prune.core.registry.families()``), or
``family: kind`` where the kinds of a family differ. A cell is
``works(**options)`` (the options the method is checked with, e.g. the
adaptive-dropout points the family has; any other point must be refused)
or ``refused(reason)``.
"""

from pathlib import Path

README = Path(__file__).parent.parent / "README.md"
BEGIN, END = "<!-- conformance-matrix -->", "<!-- /conformance-matrix -->"


def works(**options):
    """A cell where the method works, checked with ``options``."""
    return ("works", options)


def refused(reason):
    """A cell where the method is refused, for ``reason`` (for the README)."""
    return ("refused", reason)


#: The columns: ``{method: (README header, the word its errors name)}``.
METHODS = {
    "adaptive_dropout": ("adaptive dropout", "adaptive_dropout"),
    "criteria_ffn": ("criteria: FFN units", "CriterionPruning"),
    "criteria_heads": ("criteria: heads", "CriterionPruning"),
    "criteria_layers": ("criteria: layers", "CriterionPruning"),
    "layer_cut": ("layer cut", "LayerCut"),
    "low_rank": ("low rank (SVD)", "low_rank"),
    "low_rank_embedding": ("low-rank token table", "low_rank_embedding"),
    "activation_low_rank": ("activation low rank", "ActivationLowRank"),
    "dynamic_depth": ("I3D dynamic depth", "dynamic_depth"),
    "conv_norm": ("conv norm", "conv_norm"),
    "federated_dropout": ("federated dropout", "dropped_units"),
    "layer_importance": ("layer importance", "importance"),
    "convexity": ("convexity states", "convexity"),
}

CONFORMER = "SpeechBrain Conformer"
TRANSFORMER_ASR = "SpeechBrain Transformer: TransformerASR"
TRANSFORMER_LM = "SpeechBrain Transformer: TransformerLM"
BRANCHFORMER = "SpeechBrain Branchformer"
WHISPER = "Hugging Face Whisper"
SSL = "Hugging Face wav2vec2/HuBERT/WavLM"
WAV2VEC2, HUBERT, WAVLM = (
    f"{SSL}: {m}" for m in ("wav2vec2", "HuBERT", "WavLM")
)
TORCH = "PyTorch nn.TransformerEncoder"

ALL_POINTS = works(points=["ffn", "attention"])
NO_GATES = refused("I3D gates Conformer layers only")
NO_CONV = refused("no Conformer convolution module")
EVERYWHERE = {
    "criteria_ffn": works(),
    "criteria_heads": works(),
    "criteria_layers": works(),
    "layer_cut": works(),
    "low_rank": ALL_POINTS,
    "low_rank_embedding": refused("no tied token table"),
    "activation_low_rank": ALL_POINTS,
    "dynamic_depth": NO_GATES,
    "conv_norm": NO_CONV,
    "layer_importance": works(),
    "convexity": works(),
}
SSL_ROW = {
    **EVERYWHERE,
    "adaptive_dropout": refused("no mask points for Hugging Face layers"),
    "federated_dropout": works(units=["ffn", "attention"]),
}

#: THE matrix: ``{row: {method: works(...) or refused(...)}}``.
MATRIX = {
    CONFORMER: {
        **EVERYWHERE,
        "adaptive_dropout": works(points=["ffn", "query", "value", "conv"]),
        "dynamic_depth": works(gates=["attention", "conv", "ffn"]),
        "conv_norm": works(),
        "federated_dropout": works(units=["ffn1", "ffn2", "attention"]),
    },
    TRANSFORMER_ASR: {
        **EVERYWHERE,
        "adaptive_dropout": works(points=["ffn", "query", "value"]),
        # Its decoder's cross-attention runs its packed projection unseen.
        "activation_low_rank": works(points=["ffn"]),
        "federated_dropout": works(units=["ffn", "attention"]),
    },
    TRANSFORMER_LM: {
        **EVERYWHERE,
        "adaptive_dropout": works(points=["ffn"]),
        "federated_dropout": works(units=["ffn", "attention"]),
    },
    BRANCHFORMER: {
        **EVERYWHERE,
        "adaptive_dropout": refused("the cgMLP normalises over all units"),
        "criteria_ffn": refused("no FFN: the cgMLP normalises its units"),
        "low_rank": works(points=["attention"]),
        "activation_low_rank": works(points=["attention"]),
        "federated_dropout": works(units=["attention"]),
    },
    WHISPER: {
        **EVERYWHERE,
        "adaptive_dropout": works(points=["ffn"]),
        # SpeechBrain's lobe built as sb_prune.nn.WhisperLobe takes it.
        "low_rank_embedding": refused("proj_out reads the dense table"),
        "federated_dropout": works(units=["ffn", "attention"]),
    },
    WAV2VEC2: SSL_ROW,
    HUBERT: SSL_ROW,
    WAVLM: {
        **SSL_ROW,
        "criteria_heads": refused("a gated position bias per head"),
        "low_rank": works(points=["ffn"]),
        "activation_low_rank": works(points=["ffn"]),
        "federated_dropout": works(units=["ffn"]),
    },
    TORCH: {
        **EVERYWHERE,
        "adaptive_dropout": refused("torch's fused path skips masks"),
        "criteria_heads": refused("nn.MultiheadAttention's fixed heads"),
        "low_rank": works(points=["ffn"]),
        "activation_low_rank": works(points=["ffn"]),
        "federated_dropout": works(units=["ffn"]),
    },
}


def family_of_row(row):
    """The registered family a row of the matrix belongs to."""
    return row.split(": ")[0]


def render_cell(cell):
    """``yes``, ``yes (options)`` or ``refused: reason``."""
    outcome, detail = cell
    if outcome == "refused":
        return f"refused: {detail}"
    listed = [item for values in detail.values() for item in values]
    return f"yes ({', '.join(listed)})" if listed else "yes"


def render_table():
    """The matrix as a Markdown table (the README's block)."""
    headers = [header for header, _ in METHODS.values()]
    lines = [
        "| model family | " + " | ".join(headers) + " |",
        "|---" * (len(headers) + 1) + "|",
    ]
    for row, cells in MATRIX.items():
        rendered = [render_cell(cells[method]) for method in METHODS]
        lines.append(f"| {row} | " + " | ".join(rendered) + " |")
    return "\n".join(lines)


def readme_table(text):
    """The block between the matrix markers of a README's text."""
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END)].strip("\n")


if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    table = f"{BEGIN}\n{render_table()}\n{END}"
    README.write_text(before + table + after, encoding="utf-8")
