"""The READMEs' figures are what benchmarks/results/*.json renders."""

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "benchmarks"))

import readme_results  # noqa: E402
from figures import load_results  # noqa: E402
from figures.text import ClaimError  # noqa: E402

#: one figure of each results file that a README block shows
SHOWN = [
    ("whisper_dense", ["wer_dense"]),
    ("whisper_dense", ["convexity", "fsdd_speaker", "scores", 2]),
    ("whisper_compress", ["rows", 2, "WER"]),
    ("whisper_compress", ["rows", 2, "ideal_ratio"]),
    ("whisper_runtime", ["rows", 2, "e2e_speedup"]),
    ("speed_cpu", ["runs", "fp32", "criterion_0.5", "latency_ratio_b1"]),
    ("ad_compress_whole_set", ["settings", 0, "wer", "mean"]),
    ("ad_compress_subset", ["rows", 0, "wer"]),
    ("ad_from_scratch", ["runs", "chosen", "settings", 0, "wer", "sd"]),
    ("federated_dropout", ["summary", 0, "wer", "mean"]),
    ("federated_dropout_client_lr", ["rows", 0, "wer"]),
    ("federated_variants", ["runs", "local_epochs_2", "summary", 0, "wer"]),
    ("schedules_lm", ["tasks", "lm", "table", 0, "one_shot", "mean"]),
    ("schedules_asr", ["tasks", "asr", "dense"]),
    ("i3d_demo_path", ["models", "static", "settings", 0, "wer", "mean"]),
    ("i3d_whole_set", ["runs", "static_2_layers", "settings", 0, "wer"]),
]


def _figure(results, name, path):
    """The dict holding a figure, and the figure's key."""
    figures = results[name]
    for key in path[:-1]:
        figures = figures[key]
    return figures, path[-1]


def test_readmes_match_the_committed_results(capsys):
    assert readme_results.main(["--check"]) == 0, capsys.readouterr().out


@pytest.mark.parametrize("name, path", SHOWN)
def test_an_altered_figure_makes_a_readme_stale(name, path):
    results = load_results()
    assert not readme_results.stale(REPO, results)
    figures, key = _figure(results, name, path)
    if isinstance(figures[key], dict):
        figures, key = figures[key], "mean"
    figures[key] += 0.1
    diffs = readme_results.stale(REPO, results)
    assert diffs, f"{name}: {path} is not shown in any README"


def test_check_fails_on_a_readme_edited_by_hand(tmp_path, capsys):
    for relative in readme_results.readmes(REPO):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / relative, tmp_path / relative)
    shutil.copytree(
        REPO / "benchmarks" / "results", tmp_path / "benchmarks" / "results"
    )
    readme = tmp_path / "README.md"
    text = readme.read_text()
    assert "| 27.60 |" in text
    readme.write_text(text.replace("| 27.60 |", "| 17.60 |"))
    assert readme_results.main(["--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    row = "| Taylor, FFN units + heads, 35% each | yes | 29.8% | {} |"
    assert "-" + row.format("17.60") in out
    assert "+" + row.format("27.60") in out
    assert readme_results.main(["--root", str(tmp_path)]) == 0
    assert readme.read_text() == text
    assert readme_results.main(["--check", "--root", str(tmp_path)]) == 0


def test_a_claim_the_figures_no_longer_support_is_an_error():
    results = load_results()
    local = results["i3d_whole_set"]["runs"]["i3d_local"]["settings"][0]
    local["wer"]["mean"] = 30.0
    with pytest.raises(ClaimError, match="beats static layer pruning"):
        readme_results.stale(REPO, results)


def test_blocks_must_be_closed_and_known():
    results = load_results()
    with pytest.raises(ValueError, match="opened"):
        readme_results.render("<!-- figures:speed_cpu -->\n", results)
    with pytest.raises(ValueError, match="no renderer"):
        readme_results.render(
            "<!-- figures:nothing -->\n<!-- /figures:nothing -->", results
        )
