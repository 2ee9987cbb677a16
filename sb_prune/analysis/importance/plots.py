"""Plots and tables of layer-importance reports.

* :func:`plot_robustness_heatmap`: units x references (theta_0, the
  snapshots theta_t of later epochs, a fresh random draw), coloured by the
  metric increase when the unit is reset to that reference (the figure of
  Zhang, Bengio and Singer);
* :func:`plot_robustness_vs_change`: that increase against the unit's
  relative weight change, with the Spearman correlation;
* :func:`format_report`: the same figures as a text table.

Authors
 * sb_prune developers
"""

import math


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_robustness_heatmap(report, path, units=None):
    """Heat map of the metric increase per unit and reference.

    Arguments
    ---------
    report : dict
        From :meth:`sb_prune.analysis.LayerImportance.run`.
    path : str
        The PNG file to write.
    units : list of str, optional
        Rows to show (default: every unit of the report).
    """
    plt = _pyplot()
    names = units or list(report["units"])
    labels = list(report["units"][names[0]]["delta"])
    values = [
        [report["units"][name]["delta"][lab] for lab in labels]
        for name in names
    ]
    fig, axis = plt.subplots(
        figsize=(1.2 + 0.7 * len(labels), 1.0 + 0.32 * len(names))
    )
    image = axis.imshow(values, cmap="magma_r", aspect="auto", vmin=0)
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    for row, line in enumerate(values):
        for col, value in enumerate(line):
            axis.text(
                col,
                row,
                f"{value:.1f}",
                ha="center",
                va="center",
                fontsize=7,
                color="tab:cyan",
            )
    axis.set_xlabel("reset to (theta_0, theta after epoch t, random draw)")
    fig.colorbar(image, label=f"{report['metric']} increase")
    axis.set_title(
        f"Robustness: base {report['metric']} "
        f"{report['base'][report['metric']]:.1f}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_robustness_vs_change(report, path):
    """Scatter robustness (metric increase) against weight change.

    Arguments
    ---------
    report : dict
        From :meth:`sb_prune.analysis.LayerImportance.run`, with weight
        changes.
    path : str
        The PNG file to write.
    """
    plt = _pyplot()
    label = report["labelled_by"]
    colours = {
        "ambient": "tab:green",
        "intermediate": "tab:orange",
        "critical": "tab:red",
    }
    fig, axis = plt.subplots(figsize=(6, 4.5))
    for name, entry in report["units"].items():
        change = entry["weight_change"]
        if change is None or math.isnan(change):
            continue
        colour = colours[entry["class"]]
        axis.scatter(change, entry["delta"][label], color=colour)
        axis.annotate(name, (change, entry["delta"][label]), fontsize=6)
    rho = report["spearman"]["rho"]
    rho_text = "n/a" if rho is None else f"{rho:.2f}"
    axis.set(
        xlabel="relative weight change ||theta_T - theta_0|| / ||theta_0||",
        ylabel=f"{report['metric']} increase after reset ({label})",
        title=f"Robustness vs weight change (Spearman rho = {rho_text})",
    )
    for cls, colour in colours.items():
        axis.scatter([], [], color=colour, label=cls)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_report(report):
    """Render a report as a table: one row per unit.

    Arguments
    ---------
    report : dict
        From :meth:`sb_prune.analysis.LayerImportance.run`.

    Returns
    -------
    str
        Columns: unit, parameters, weight change, the metric increase per
        reference, class.

    Example
    -------
    >>> report = {"metric": "WER", "base": {"WER": 10.0},
    ...           "spearman": {"rho": None},
    ...           "units": {"layer0": {"params": 1200, "weight_change": 0.5,
    ...                                "delta": {"init": 0.2},
    ...                                "class": "ambient"}}}
    >>> print(format_report(report))
    unit       params  change  dWER init  class
    layer0      1,200   0.500       0.20  ambient
    base WER 10.00; Spearman rho (robustness vs change): n/a
    """
    units = report["units"]
    labels = list(next(iter(units.values()))["delta"])
    metric = report["metric"]
    header = f"{'unit':<18}{'params':>9}{'change':>8}" + "".join(
        f"{f'd{metric} {lab}':>{max(11, len(lab) + len(metric) + 3)}}"
        for lab in labels
    )
    lines = [header + "  class"]
    for name, entry in units.items():
        change = entry["weight_change"]
        change = "n/a" if change is None else f"{change:.3f}"
        row = f"{name:<18}{entry['params']:>9,}{change:>8}"
        for lab in labels:
            width = max(11, len(lab) + len(metric) + 3)
            row += f"{entry['delta'][lab]:>{width}.2f}"
        lines.append(f"{row}  {entry['class']}")
    rho = report["spearman"]["rho"]
    lines.append(
        f"base {metric} {report['base'][metric]:.2f}; Spearman rho "
        f"(robustness vs change): {'n/a' if rho is None else f'{rho:.2f}'}"
    )
    return "\n".join(lines)
