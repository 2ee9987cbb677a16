"""Where the gates of an I3D encoder open, and what in the input decides.

:class:`GateRecorder` collects, while a model is evaluated, the gate
probabilities and decisions of its gated encoder
(:class:`~sb_prune.methods.i3d.gating.GatedEncoder`) for every utterance.
:meth:`GateRecorder.report` summarises them (average executed layers, open
rate and mean probability per layer and gate, Spearman correlations of each
gate's probability with the utterance length and, for the synthetic corpus,
its signal-to-noise ratio) and draws ``gates_<name>.png``:

* the execution probability of every gate per layer (median and 10-90%
  band over utterances), with the threshold;
* heat maps of the correlation of each gate probability with the length
  and the SNR;
* executed layers per utterance against length, SNR, and per speaker.

Usage (the LibriSpeech ASR recipe does this for each test set)::

    with GateRecorder(brain.unwrapped_modules()) as gates:
        brain.evaluate(test_set)
    summary = gates.report(output_folder, "test", test_set.data_ids)

Authors
 * sb_prune developers
"""

import json
import os

import torch
from speechbrain.utils.distributed import if_main_process

from sb_prune.methods.i3d.gating import GatedEncoder


class GateRecorder:
    """Record the gates of a model's gated encoder in evaluation.

    A context manager: inside the ``with`` block, every forward of the
    encoder in evaluation mode appends its per-utterance gates (training
    forwards are ignored). A model without gated encoder records nothing.

    Arguments
    ---------
    model : torch.nn.Module
        The model (or ModuleDict), holding at most one gated encoder.

    Example
    -------
    >>> from sb_prune.nn import GatedConformerEncoder
    >>> enc = GatedConformerEncoder(2, 8, 16, 2, kernel_size=3).eval()
    >>> pos = torch.rand(1, 9, 8)
    >>> with GateRecorder(enc) as gates:
    ...     _ = enc(torch.rand(3, 5, 8), pos_embs=pos)
    ...     _ = enc(torch.rand(2, 5, 8), pos_embs=pos)
    >>> gates.probabilities.shape, gates.frames.tolist()
    (torch.Size([5, 2, 2]), [5, 5, 5, 5, 5])
    >>> gates.summary()["avg_layers"], gates.summary()["input_dependent"]
    (2.0, 0.0)
    """

    def __init__(self, model):
        encoders = [m for m in model.modules() if isinstance(m, GatedEncoder)]
        if len(encoders) > 1:
            raise ValueError(
                "GateRecorder records one gated encoder; the model has "
                f"{len(encoders)}: pass the encoder itself"
            )
        self.encoder = encoders[0] if encoders else None
        self._handle = None
        self._batches = []

    def __enter__(self):
        if self.encoder is not None:
            self._handle = self.encoder.register_forward_hook(
                self._record, with_kwargs=True
            )
        return self

    def __exit__(self, *exc_info):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _record(self, encoder, args, kwargs, output):
        if encoder.training:
            return
        src = kwargs["src"] if "src" in kwargs else args[0]
        mask = kwargs.get("src_key_padding_mask")
        if mask is None and len(args) > 2:
            mask = args[2]
        frames = torch.full((src.shape[0],), src.shape[1])
        if mask is not None:
            frames = (~mask).sum(dim=1).cpu()
        self._batches.append(
            (
                encoder.gate_probabilities.float().cpu(),
                encoder.gate_decisions.float().cpu(),
                frames,
            )
        )

    def __len__(self):
        return sum(len(batch[2]) for batch in self._batches)

    def _cat(self, position):
        return torch.cat([batch[position] for batch in self._batches])

    @property
    def probabilities(self):
        """Execution probabilities, ``[utterances, layers, gates]``."""
        return self._cat(0)

    @property
    def decisions(self):
        """Gate decisions (1: executed), ``[utterances, layers, gates]``."""
        return self._cat(1)

    @property
    def frames(self):
        """Valid encoder frames of each utterance, ``[utterances]``."""
        return self._cat(2)

    @property
    def executed_layers(self):
        """Executed layers per utterance (each gate a layer fraction)."""
        return self.decisions.sum(dim=(1, 2)) / len(self.encoder.gates)

    def summary(self):
        """Return the averages over the recorded utterances.

        Returns
        -------
        dict
            ``utterances``, ``layers`` (of the encoder), ``avg_layers``
            (executed, each gate counting ``1 / len(gates)`` of a layer),
            ``executed_fraction``, ``input_dependent`` (the share of the
            gates open for some utterances and closed for others), and per
            gate the ``open_rate`` and ``mean_probability`` of each layer.
            Empty if nothing was recorded.
        """
        if not self._batches:
            return {}
        decisions, probabilities = self.decisions, self.probabilities
        gates = self.encoder.gates
        open_rate = decisions.float().mean(0)
        varies = (open_rate > 0) & (open_rate < 1)
        return {
            "utterances": len(self),
            "layers": decisions.shape[1],
            "gates": list(gates),
            "avg_layers": round(float(self.executed_layers.mean()), 4),
            "executed_fraction": round(float(decisions.mean()), 4),
            "input_dependent": round(float(varies.float().mean()), 4),
            "open_rate": {
                gate: _rounded(open_rate[:, g]) for g, gate in enumerate(gates)
            },
            "mean_probability": {
                gate: _rounded(probabilities[:, :, g].mean(0))
                for g, gate in enumerate(gates)
            },
        }

    def report(self, folder, name, ids=None, labels_folder=None):
        """Write ``gates_<name>.json`` and ``gates_<name>.png``.

        Arguments
        ---------
        folder : str
            The output folder.
        name : str
            The test set's name.
        ids : list of str, optional
            Utterance IDs in evaluation order (``test_set.data_ids`` for a
            test loader without shuffling), for per-speaker plots and the
            labels.
        labels_folder : str, optional
            A corpus folder with ``utterances.csv`` (the synthetic corpus,
            see :func:`sb_prune.data.read_labels`): adds the SNR.

        Returns
        -------
        dict
            :meth:`summary` plus the correlations and the files written
            (empty if nothing was recorded).
        """
        summary = self.summary()
        if not summary:
            return {}
        inputs = self._inputs(ids, labels_folder)
        summary["correlation"] = {
            key: {
                gate: [
                    _spearman(self.probabilities[:, layer, g], values)
                    for layer in range(summary["layers"])
                ]
                for g, gate in enumerate(self.encoder.gates)
            }
            for key, values in inputs.items()
            if key != "speaker"
        }
        summary["executed_layers_correlation"] = {
            key: _spearman(self.executed_layers, values)
            for key, values in inputs.items()
            if key != "speaker"
        }
        json_path = os.path.join(folder, f"gates_{name}.json")
        png_path = os.path.join(folder, f"gates_{name}.png")
        if if_main_process():
            rows = [
                {
                    "id": None if ids is None else ids[i],
                    "frames": int(self.frames[i]),
                    "executed_layers": float(self.executed_layers[i]),
                    "probabilities": _rounded(self.probabilities[i]),
                }
                for i in range(len(self))
            ]
            with open(json_path, "w", encoding="utf-8") as handle:
                json.dump({**summary, "utterances_detail": rows}, handle)
            plot_gates(self, inputs, summary, png_path)
        summary["files"] = [os.path.basename(p) for p in (json_path, png_path)]
        return summary

    def _inputs(self, ids, labels_folder):
        """Per-utterance input properties: length, SNR, speaker."""
        inputs = {"length": self.frames.float()}
        if ids is None:
            return inputs
        if len(ids) != len(self):
            raise ValueError(
                f"ids has {len(ids)} utterances but the recorder saw "
                f"{len(self)}: record exactly one pass over the test set, "
                "without shuffling"
            )
        labels = {}
        if labels_folder is not None:
            from sb_prune.data import read_labels

            try:
                labels = read_labels(labels_folder)
            except FileNotFoundError:
                labels = {}
        if labels and all(i in labels for i in ids):
            inputs["snr_db"] = torch.tensor(
                [labels[i]["snr_db"] for i in ids], dtype=torch.float
            )
            inputs["speaker"] = [str(labels[i]["speaker"]) for i in ids]
        else:
            inputs["speaker"] = [str(i).split("-")[0] for i in ids]
        return inputs


def _rounded(values):
    return [round(float(v), 4) for v in values.flatten()]


def _spearman(x, y):
    """Spearman correlation, or None when one side is constant."""
    from scipy.stats import spearmanr

    x, y = torch.as_tensor(x).double(), torch.as_tensor(y).double()
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return round(float(spearmanr(x.numpy(), y.numpy())[0]), 4)


_TITLES = {"length": "utterance length (encoder frames)", "snr_db": "SNR (dB)"}


def plot_gates(recorder, inputs, summary, path):
    """Draw the gate analysis of a :class:`GateRecorder` into a PNG.

    Arguments
    ---------
    recorder : GateRecorder
        A recorder that saw at least one utterance.
    inputs : dict
        ``length`` (and optionally ``snr_db``, ``speaker``) per utterance.
    summary : dict
        :meth:`GateRecorder.report`'s summary (correlations).
    path : str
        The PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gates = recorder.encoder.gates
    probabilities = recorder.probabilities
    layers = list(range(probabilities.shape[1]))
    executed = recorder.executed_layers
    numeric = [key for key in ("length", "snr_db") if key in inputs]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    ax = axes[0, 0]
    for g, gate in enumerate(gates):
        values = probabilities[:, :, g]
        low, mid, high = torch.quantile(
            values, torch.tensor([0.1, 0.5, 0.9]), dim=0
        )
        ax.plot(layers, mid, marker="o", label=gate)
        ax.fill_between(layers, low, high, alpha=0.2)
    ax.axhline(recorder.encoder.threshold, color="grey", linestyle="--")
    ax.set(
        xlabel="layer",
        ylabel="execution probability",
        ylim=(-0.02, 1.02),
        title=f"gates over {len(recorder)} utterances "
        f"(avg {summary['avg_layers']:.2f} of {len(layers)} layers)",
    )
    ax.set_xticks(layers)
    ax.legend()
    for column, key in enumerate(numeric, start=1):
        ax = axes[0, column]
        matrix = [
            [float("nan") if v is None else v for v in values]
            for values in summary["correlation"][key].values()
        ]
        image = ax.imshow(matrix, cmap="coolwarm", vmin=-1, vmax=1)
        ax.set(
            yticks=range(len(gates)),
            yticklabels=gates,
            xticks=layers,
            xlabel="layer",
            title=f"Spearman corr. of gate probability with {key}",
        )
        fig.colorbar(image, ax=ax, shrink=0.7)
        ax = axes[1, column - 1]
        ax.scatter(inputs[key], executed, s=8, alpha=0.6)
        rho = summary["executed_layers_correlation"][key]
        ax.set(
            xlabel=_TITLES[key],
            ylabel="executed layers",
            title=f"executed layers vs {key} (rho = {rho})",
        )
    ax = axes[1, 2]
    if "speaker" in inputs:
        speakers = sorted(set(inputs["speaker"]))
        groups = [
            [float(e) for e, s in zip(executed, inputs["speaker"]) if s == spk]
            for spk in speakers
        ]
        ax.boxplot(groups)
        ax.set_xticks(range(1, len(speakers) + 1), speakers, rotation=45)
        ax.set(xlabel="speaker", ylabel="executed layers", title="per speaker")
    for ax in axes.flatten():
        if not ax.has_data():
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
