"""Recipe variants stay in step with the dense baseline they extend.

Every hparams file of the ASR recipe is the baseline plus sb_prune keys:
a key both files define must be defined identically, except the few that
each method is meant to change. Tuning the baseline therefore means
updating every variant, and this test says where.
"""

from pathlib import Path

import pytest

HPARAMS = (
    Path(__file__).parents[1] / "recipes" / "LibriSpeech" / "ASR" / "hparams"
)
BASE = "conformer_ctc.yaml"
#: Keys a method variant may define differently from the baseline.
METHOD_KEYS = {"experiment", "Transformer", "prune_hooks"}
#: ...and what single variants may change on top.
VARIANT_KEYS = {
    # Rescoring re-tests a finished run with several LMs: one file each.
    "conformer_ctc_lm_rescoring.yaml": {"wer_file_prefix", "results_file"},
}


def top_level_blocks(path):
    """``{key: text of its block}``, comments and blank lines dropped."""
    blocks, key = {}, None
    for line in path.read_text().splitlines():
        stripped = line.split(" #")[0].rstrip()
        if not stripped or stripped.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            key = stripped.split(":")[0]
            blocks[key] = []
        blocks[key].append(stripped)
    return {k: "\n".join(v) for k, v in blocks.items()}


VARIANTS = sorted(
    p.name for p in HPARAMS.glob("conformer_ctc_*.yaml") if p.name != BASE
)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_matches_the_baseline(variant):
    base = top_level_blocks(HPARAMS / BASE)
    other = top_level_blocks(HPARAMS / variant)
    different = sorted(
        key
        for key in set(base) & set(other)
        if key not in METHOD_KEYS | VARIANT_KEYS.get(variant, set())
        and base[key] != other[key]
    )
    assert not different, f"{variant} differs from {BASE} on {different}"
    missing = sorted(set(base) - set(other) - {"Transformer"})
    assert not missing, f"{variant} lacks {missing} of {BASE}"
