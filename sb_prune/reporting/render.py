"""Render a folder of recipe runs as one markdown report with plots.

``sb-prune report RESULTS_DIR`` finds every run under the folder (each
holds a ``results.json``), tabulates what they report, measures the ASR
runs' multiply-accumulates and CPU latency side by side in one process (so
the latency ratios are comparable), draws WER against parameters and
against latency with the Pareto front, and gathers the plots the runs
wrote (retention histograms, gate probabilities, convexity curves, layer
importance heat maps...) into ``REPORT.md``.

Authors
 * sb_prune developers
"""

import json
import os
import shutil
from pathlib import Path

import torch

from sb_prune.core.profiling import count_macs, measure_latency
from sb_prune.deploy.pretrained import exported_from

REPORT = "REPORT.md"
#: Input for latency and MACs: a batch of 8 utterances of 10 s. The demo's
#: models are small (d_model 144); at batch 1 and a few seconds their time
#: is per-operator overhead, which pruning does not remove, so speed-ups
#: there say little about what pruning buys.
LATENCY_SECONDS = 10.0
LATENCY_BATCH = 8


def find_runs(results_dir):
    """Return ``{name: run folder}`` for every results.json under a folder.

    Arguments
    ---------
    results_dir : str
        A folder of runs (searched recursively).

    Returns
    -------
    dict
        Run names (paths relative to ``results_dir``) -> folders.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results_dir {results_dir} does not exist")
    runs = {}
    for folder, _, files in sorted(os.walk(results_dir, followlinks=True)):
        if "results.json" in files:
            folder = Path(folder)
            runs[folder.relative_to(results_dir).as_posix()] = folder
    if not runs:
        raise FileNotFoundError(
            f"results_dir {results_dir} holds no run (no results.json)"
        )
    return runs


def _init_from(folder):
    """The ``init_from`` a run's saved hyperparams.yaml names, or None."""
    path = Path(folder) / "hyperparams.yaml"
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(":")
        if key == "init_from" and value.strip() not in ("", "null", "None"):
            return Path(value.strip()).resolve()
    return None


def model_families(runs):
    """The model family of each run: a dense model and its compressions.

    A run's family is the run whose folder holds the run's ``init_from``
    (``sb-prune compress`` writes it; an exported folder stands for the run
    it was exported from), else the ``init_from`` path itself; a run
    without ``init_from`` (trained from scratch) is its own family.

    Arguments
    ---------
    runs : dict
        ``name -> run folder``, from :func:`find_runs`.

    Returns
    -------
    dict
        ``name -> family`` (a run name or a path).
    """
    folders = {name: Path(folder).resolve() for name, folder in runs.items()}
    families = {}
    for name, folder in folders.items():
        source = _init_from(folder)
        if source is None:
            families[name] = name
            continue
        source = exported_from(source) or source
        owners = [
            other
            for other, path in folders.items()
            if other != name and (source == path or path in source.parents)
        ]
        families[name] = owners[0] if owners else str(source)
    return families


def _asr_metrics(results):
    """The first test split's WER/CER of an ASR run, or None."""
    for name, value in results.items():
        if name != "valid" and isinstance(value, dict) and "WER" in value:
            return value
    return None


def _load_asr_model(run_folder):
    """The evaluated model of an ASR run, as a ``(wav, lens)`` callable."""
    from hyperpyyaml import load_hyperpyyaml

    from sb_prune.deploy.pretrained import load_evaluated_checkpoints
    from sb_prune.methods.adaptive_dropout.strip import strip_adaptive_dropout

    with open(run_folder / "hyperparams.yaml", encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle)
    load_evaluated_checkpoints(hparams, "WER")
    strip_adaptive_dropout(hparams["Transformer"])
    modules = [hparams[k] for k in ("CNN", "Transformer", "ctc_lin")]
    features, normalize = hparams["compute_features"], hparams["normalize"]
    for module in (*modules, normalize):
        module.eval()

    def transcribe_logits(wavs, lens):
        feats = normalize(features(wavs), lens)
        enc_out, _ = modules[1](modules[0](feats), tgt=None, wav_len=lens)
        return modules[2](enc_out)

    return transcribe_logits, hparams["sample_rate"]


def measure_runs(runs, repeats=10):
    """MACs and interleaved latency of each ASR run's final model.

    Arguments
    ---------
    runs : dict
        ``name -> run folder`` (runs without a CTC checkpoint are skipped).
    repeats : int
        Timed calls per model.

    Returns
    -------
    dict
        ``name -> {"macs": int, "latency_s": float}``.
    """
    functions, rate = {}, 16000
    for name, folder in runs.items():
        if (folder / "hyperparams.yaml").exists() and (
            folder / "save"
        ).is_dir():
            try:
                functions[name], rate = _load_asr_model(folder)
            except (KeyError, FileNotFoundError):
                continue
    if not functions:
        return {}
    wav = torch.randn(LATENCY_BATCH, int(LATENCY_SECONDS * rate)) * 0.1
    lens = torch.ones(LATENCY_BATCH)
    times = measure_latency(functions, lambda: (wav, lens), repeats=repeats)
    return {
        name: {"macs": count_macs(f, wav, lens), "latency_s": times[name]}
        for name, f in functions.items()
    }


def pareto_front(points):
    """Indices of the points that no other point beats on both axes.

    Lower is better on both axes.

    Arguments
    ---------
    points : list of tuple
        ``(cost, error)`` pairs.

    Returns
    -------
    list of int
        Indices of the front, by increasing cost.

    Example
    -------
    >>> pareto_front([(1, 5), (2, 3), (3, 4), (4, 1)])
    [0, 1, 3]
    """
    order = sorted(range(len(points)), key=lambda i: points[i])
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(rows, cost_key, cost_label, path, family=None):
    """Scatter WER against a cost, label the runs, draw the front.

    With ``family``, the runs of that model family (a dense model and its
    compressions) are plotted as dots and make the front; runs of other
    models are crosses, outside the front.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get(cost_key) is not None]
    points = [(r[cost_key], r["wer"]) for r in rows]
    ours = [family is None or r.get("family") == family for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for member, marker, label in (
        (True, "o", f"compressions of {family}" if family else None),
        (False, "x", "other models"),
    ):
        chosen = [p for p, m in zip(points, ours) if m == member]
        if chosen:
            ax.scatter(*zip(*chosen), marker=marker, label=label)
    for row, (x, y) in zip(rows, points):
        ax.annotate(row["run"], (x, y), fontsize=7)
    members = [p for p, m in zip(points, ours) if m]
    front = [members[i] for i in pareto_front(members)]
    ax.plot(*zip(*front), linestyle="--", color="grey", label="Pareto front")
    ax.set(xlabel=cost_label, ylabel="test WER (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(rows, columns):
    lines = ["| " + " | ".join(title for _, title in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            if value is None:
                cells.append("")
            elif isinstance(value, float):
                cells.append(f"{value:.3g}")
            elif isinstance(value, int):
                cells.append(f"{value:,}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_report(results_dir, out=None, latency=True):
    """Write ``REPORT.md`` and its plots for a folder of runs.

    Arguments
    ---------
    results_dir : str
        Folder of runs (see :func:`find_runs`).
    out : str, optional
        Report folder (default: ``results_dir``).
    latency : bool
        Measure MACs and latency of the ASR runs (loads every model).

    Returns
    -------
    pathlib.Path
        The markdown file.
    """
    runs = find_runs(results_dir)
    out = Path(out or results_dir)
    out.mkdir(parents=True, exist_ok=True)
    measured = measure_runs(runs) if latency else {}
    families = model_families(runs)
    asr_rows, other = [], {}
    for name, folder in runs.items():
        results = json.loads((folder / "results.json").read_text())
        metrics = _asr_metrics(results)
        if metrics is None:
            other[name] = results
            continue
        asr_rows.append(
            {
                "run": name,
                "family": families[name],
                "params": results.get("params"),
                "encoder_params": results.get("encoder_params"),
                "wer": metrics["WER"],
                "cer": metrics.get("CER"),
                **measured.get(name, {}),
            }
        )
    timed = [r for r in asr_rows if r.get("latency_s")]
    reference = next((r for r in timed if r["run"] == "dense"), None) or max(
        timed, key=lambda r: r["params"], default=None
    )
    for row in asr_rows:
        if reference is not None and row.get("latency_s"):
            row["speedup"] = reference["latency_s"] / row["latency_s"]
    lines = [f"# sb_prune report: {Path(results_dir).resolve()}", ""]
    if asr_rows:
        lines += [
            "## ASR runs",
            "",
            f"Latency: one process, models interleaved, batch "
            f"{LATENCY_BATCH} of {LATENCY_SECONDS:g} s of audio, CPU, "
            f"{torch.get_num_threads()} threads (median of the repeats); "
            "speed-up relative to the "
            "run named dense, else the largest model "
            f"({reference['run'] if reference else 'n/a'}). Model: the dense "
            "model a run compresses (its init_from); the plots draw the "
            "model most runs compress and its Pareto front, runs of other "
            "models are crosses outside it.",
            "",
            _table(
                asr_rows,
                [
                    ("run", "run"),
                    ("family", "model"),
                    ("params", "params"),
                    ("encoder_params", "encoder params"),
                    ("wer", "test WER %"),
                    ("cer", "test CER %"),
                    ("macs", "MACs"),
                    ("latency_s", "latency s"),
                    ("speedup", "speed-up"),
                ],
            ),
            "",
        ]
        # The main family: the model most runs compress.
        counts = [r["family"] for r in asr_rows]
        family = max(counts, key=counts.count)
        plot_pareto(
            asr_rows,
            "params",
            "parameters",
            out / "wer_vs_params.png",
            family=family,
        )
        lines += ["![WER vs parameters](wer_vs_params.png)", ""]
        if measured:
            plot_pareto(
                asr_rows,
                "latency_s",
                "latency (s)",
                out / "wer_vs_latency.png",
                family=family,
            )
            lines += ["![WER vs latency](wer_vs_latency.png)", ""]
    for name, results in other.items():
        lines += [f"## {name}", "", "```json", json.dumps(results, indent=1)]
        lines += ["```", ""]
    plots = [
        p for folder in runs.values() for p in sorted(folder.glob("*.png"))
    ]
    if plots:
        lines += ["## Plots written by the runs", ""]
        figures = out / "figures"
        figures.mkdir(exist_ok=True)
        for plot in plots:
            run = plot.parent.relative_to(Path(results_dir)).as_posix()
            target = figures / f"{run.replace('/', '_')}_{plot.name}"
            shutil.copy(plot, target)
            lines += [
                f"### {run}: {plot.stem}",
                "",
                f"![{plot.stem}](figures/{target.name})",
                "",
            ]
    path = out / REPORT
    path.write_text("\n".join(lines))
    return path
