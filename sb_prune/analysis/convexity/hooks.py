"""Convexity scoring between epochs and layer cuts, as PruningBrain hooks.

:class:`ConvexityScoring` computes the graph convexity (Tětková et al.) of
labelled utterances at every depth of an encoder: it runs the Brain's own
``compute_forward`` on a labelled CSV, mean-pools the input and the output
of every encoder layer over valid frames, scores each depth with
:func:`sb_prune.analysis.layerwise_convexity`, and writes the scores to a
JSON file and a PNG curve. It runs when training starts (on the loaded
pretrained model) and/or every few epochs. It is also an importance
(:class:`sb_prune.core.importance.Importance`) of the ``layers`` group: a
layer's score is the convexity of its output.

:class:`LayerCut` removes encoder layers once, when training starts or
after a given epoch, with a rule from :mod:`sb_prune.methods.layer_cut.rules`:
the convexity-based cut of Dorszewski et al. (2024) keeps the layers up to
the convexity peak (``rule: peak``) or up to the first layer reaching a
fraction of it (``rule: fraction``); ``first``, ``last`` and
``evenly_spaced`` keep a given number of layers (baselines at the same
depth). Fine-tuning then continues on the smaller model.

Both work on SpeechBrain ``ConformerEncoder``/``TransformerEncoder`` stacks
and on Hugging Face wav2vec2/HuBERT/WavLM encoders used through
SpeechBrain's wrappers (``encoder: wav2vec2.model.encoder``).

Authors
 * sb_prune developers
"""

import json
import logging
import os
import time

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.dataio import load_data_csv, read_audio
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.data_pipeline import provides, takes
from speechbrain.utils.distributed import ddp_broadcast, if_main_process

from sb_prune.analysis.convexity.hidden_states import pooled_layer_states
from sb_prune.analysis.convexity.layers import layerwise_convexity
from sb_prune.core.encoders import find_layer_stack
from sb_prune.core.importance import Importance
from sb_prune.core.validation import check_bool, check_int, check_string
from sb_prune.training.hooks import PruningHook

logger = logging.getLogger(__name__)


def labelled_utterances(
    csv_file,
    label_column,
    audio_column="wav",
    data_root=None,
    max_per_class=None,
    seed=0,
):
    """Read a labelled CSV as a dataset of ``id``, ``sig`` and ``label``.

    Arguments
    ---------
    csv_file : str
        A SpeechBrain CSV (``ID`` column, an audio path column, a label
        column; ``duration`` if present sorts the utterances).
    label_column : str
        The column holding the class labels.
    audio_column : str
        The column holding the audio paths.
    data_root : str, optional
        Replaces ``$data_root`` in the CSV.
    max_per_class : int, optional
        Keep at most that many utterances per class (drawn with ``seed``).
    seed : int
        Seed of that draw.

    Returns
    -------
    speechbrain.dataio.dataset.DynamicItemDataset
        Sorted by duration when the CSV has one.

    Example
    -------
    >>> labelled_utterances("/no/such.csv", "keyword")
    Traceback (most recent call last):
    ...
    ValueError: csv_file /no/such.csv does not exist
    """
    if not os.path.isfile(csv_file):
        raise ValueError(f"csv_file {csv_file} does not exist")
    replacements = {} if data_root is None else {"data_root": data_root}
    rows = load_data_csv(csv_file, replacements)
    if not rows:
        raise ValueError(f"csv_file {csv_file} holds no utterance")
    columns = next(iter(rows.values()))
    for key, column in (
        ("label_column", label_column),
        ("audio_column", audio_column),
    ):
        if column not in columns:
            raise ValueError(
                f"{key} '{column}' is not a column of {csv_file} (columns: "
                f"ID, {', '.join(columns)})"
            )
    if max_per_class is not None:
        rows = _subsample(rows, label_column, max_per_class, seed)
    dataset = DynamicItemDataset(rows)

    @takes(audio_column)
    @provides("sig")
    def audio_pipeline(path):
        return read_audio(path)

    @takes(label_column)
    @provides("label")
    def label_pipeline(label):
        return label

    dataset.add_dynamic_item(audio_pipeline)
    dataset.add_dynamic_item(label_pipeline)
    dataset.set_output_keys(["id", "sig", "label"])
    if "duration" in columns:
        dataset = dataset.filtered_sorted(sort_key="duration")
    return dataset


def _subsample(rows, label_column, max_per_class, seed):
    rng = np.random.default_rng(seed)
    per_class = {}
    for utt_id, row in rows.items():
        per_class.setdefault(row[label_column], []).append(utt_id)
    kept = set()
    for ids in per_class.values():
        if len(ids) > max_per_class:
            ids = rng.choice(ids, max_per_class, replace=False).tolist()
        kept.update(ids)
    return {utt_id: row for utt_id, row in rows.items() if utt_id in kept}


def plot_convexity(history, path, cut=None, title=None):
    """Plot convexity against depth, one curve per scoring.

    Arguments
    ---------
    history : list of dict
        Entries with ``when`` and ``scores`` (one per depth, 0 = input).
    path : str
        The PNG file to write.
    cut : dict, optional
        A :class:`LayerCut` decision (``kept``, ``total``); its kept
        layers are marked.
    title : str, optional
        Title of the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    for entry in history:
        depths = range(len(entry["scores"]))
        axis.plot(depths, entry["scores"], marker="o", label=entry["when"])
    if cut is not None and len(cut["kept"]) < cut["total"]:
        for layer in cut["kept"]:
            axis.axvline(layer + 1, color="grey", linestyle=":", linewidth=1)
        axis.plot([], [], color="grey", linestyle=":", label="kept layers")
    axis.set(
        xlabel="depth (0 = encoder input, l = output of layer l)",
        ylabel="graph convexity (%)",
        title=title,
    )
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class ConvexityScoring(PruningHook, Importance):
    """Score the graph convexity of every encoder depth between epochs.

    The labelled utterances of ``csv_file`` go through the Brain's
    ``compute_forward`` (stage VALID, evaluation mode, no gradients); the
    input of the encoder's first layer and the output of each layer are
    mean-pooled over valid frames (using ``batch.sig``'s relative lengths),
    and each depth is scored by
    :func:`sb_prune.analysis.layerwise_convexity` with the labels of
    ``label_column``. Hidden states are extracted on every process; the
    scores are computed on the main process and broadcast.

    As an :class:`~sb_prune.core.importance.Importance` it scores the
    members of the ``layers`` group (the encoder's layers) with the
    convexity of each layer's output in its latest scoring
    (:meth:`observe_model` scores the model now); :class:`LayerCut` reads
    it so.

    Files written to ``output_folder``: ``<name>.json`` (the scores of
    every scoring, and the cut if a :class:`LayerCut` made one),
    ``<name>.png`` (the curves) and, with ``save_states``,
    ``<name>_states_<when>.npz`` (``states`` ``[L + 1, N, D]``, ``labels``
    and ``ids``: the pooled embeddings, e.g. for
    ``benchmarks/convexity.py --states``).

    Arguments
    ---------
    csv_file : str
        Labelled utterances (an ``ID``, an audio and a label column).
    label_column : str
        The column holding the class labels (at least 2 classes, 2
        utterances per class).
    output_folder : str
        Where the JSON and PNG files go.
    encoder : str, optional
        Path of the layer stack in the Brain's modules (e.g.
        ``Transformer.encoder``, ``wav2vec2.model.encoder``); default: the
        first module called ``encoder`` with a ``layers`` ModuleList.
    audio_column : str
        The CSV column of the audio paths.
    data_root : str, optional
        Replaces ``$data_root`` in the CSV.
    max_per_class : int, optional
        Utterances scored per class at most.
    batch_size : int
        Utterances per forward pass.
    n_neighbors, max_pairs, seed : int
        Passed to :func:`sb_prune.analysis.graph_convexity` (``seed`` also
        draws the ``max_per_class`` subset).
    at_fit_start : bool
        Score when training starts (the loaded, e.g. pretrained, model).
    every_n_epochs : int
        Also score after every that many training epochs (0: never).
    name : str
        Stem of the output files, and the key of the hook's state in
        checkpoints (two scorings need two names).
    save_states : bool
        Also save the pooled hidden states of every scoring.

    Example
    -------
    >>> hook = ConvexityScoring("utts.csv", "keyword", "out", every_n_epochs=2)
    >>> hook.due(4), hook.due(3)
    (True, False)
    >>> from speechbrain.lobes.models.transformer.Transformer import (
    ...     TransformerEncoder,
    ... )
    >>> from sb_prune.core.importance import Members
    >>> hook.load_state_dict({"history": [{"when": "start",
    ...                                    "scores": [9.0, 40.0, 75.0]}]})
    >>> encoder = TransformerEncoder(2, 2, 8, d_model=4)
    >>> hook.score(Members("encoder", "layers", encoder))
    tensor([40., 75.])
    >>> ConvexityScoring("utts.csv", "keyword", "out", batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be an integer >= 1, got 0
    >>> ConvexityScoring("utts.csv", "keyword", "out", every_n_epochs="2")
    Traceback (most recent call last):
    ...
    ValueError: every_n_epochs must be an integer >= 0, got '2'
    """

    def __init__(
        self,
        csv_file,
        label_column,
        output_folder,
        encoder=None,
        audio_column="wav",
        data_root=None,
        max_per_class=None,
        batch_size=8,
        n_neighbors=10,
        max_pairs=5000,
        seed=0,
        at_fit_start=True,
        every_n_epochs=0,
        name="convexity",
        save_states=False,
    ):
        super().__init__(name)
        check_int("batch_size", batch_size, 1)
        check_int("n_neighbors", n_neighbors, 1)
        check_int("max_pairs", max_pairs, 1)
        check_int("every_n_epochs", every_n_epochs, 0)
        check_int("seed", seed, 0)
        if max_per_class is not None:
            check_int("max_per_class", max_per_class, 2)
        for key, value in [
            ("csv_file", csv_file),
            ("label_column", label_column),
            ("output_folder", output_folder),
            ("audio_column", audio_column),
        ]:
            check_string(key, value)
        check_string("encoder", encoder, optional=True)
        check_string("data_root", data_root, optional=True)
        check_bool("at_fit_start", at_fit_start)
        check_bool("save_states", save_states)
        self.csv_file = csv_file
        self.label_column = label_column
        self.output_folder = output_folder
        self.encoder = encoder
        self.audio_column = audio_column
        self.data_root = data_root
        self.max_per_class = max_per_class
        self.batch_size = batch_size
        self.n_neighbors = n_neighbors
        self.max_pairs = max_pairs
        self.seed = seed
        self.at_fit_start = at_fit_start
        self.every_n_epochs = every_n_epochs
        self.save_states = save_states
        self.history = []
        self.cut = None
        self._latest = None
        self._dataset = None

    def due(self, epoch):
        """Whether the hook scores after training epoch ``epoch``."""
        return bool(self.every_n_epochs) and epoch % self.every_n_epochs == 0

    def dataset(self):
        """The labelled utterances (see :func:`labelled_utterances`)."""
        if self._dataset is None:
            self._dataset = labelled_utterances(
                self.csv_file,
                self.label_column,
                self.audio_column,
                self.data_root,
                self.max_per_class,
                self.seed,
            )
        return self._dataset

    def on_fit_start(self, brain):
        """Check the encoder; score the loaded model if ``at_fit_start``."""
        find_layer_stack(brain.unwrapped_modules(), self.encoder)
        if self.at_fit_start:
            self.observe_model(brain, "start")
        return False

    def on_train_epoch_end(self, brain, epoch):
        """Score after every ``every_n_epochs`` epochs."""
        if self.due(epoch):
            self.observe_model(brain, f"epoch {epoch}")
        return False

    def observe_model(self, brain, when):
        """Return the convexity per depth at ``when``, scoring if needed.

        Arguments
        ---------
        brain : sb_prune.PruningBrain
            The Brain whose model is scored.
        when : str
            ``start`` or ``epoch <n>``; a scoring already made at that
            moment (possibly before a resume) is reused.

        Returns
        -------
        list of float
            Convexity (%) per depth: the encoder input, then each layer.
        """
        for entry in self.history:
            if entry["when"] == when:
                self._latest = entry
                return entry["scores"]
        start = time.perf_counter()
        states, labels, ids = self.pooled_states(brain)
        if self.save_states and if_main_process():
            self._save_states(states, labels, ids, when)
        results = None
        if if_main_process():
            try:
                results = layerwise_convexity(
                    states,
                    labels,
                    n_neighbors=self.n_neighbors,
                    max_pairs=self.max_pairs,
                    seed=self.seed,
                )
            except ValueError as error:
                raise ValueError(
                    f"ConvexityScoring of {self.csv_file} "
                    f"({self.label_column}): {error}"
                ) from error
            results = {
                "scores": [r.score for r in results],
                "pooled": [r.pooled for r in results],
            }
        results = ddp_broadcast(results)
        entry = {
            "when": when,
            **results,
            "n_points": len(labels),
            "n_classes": len(set(labels)),
            "seconds": round(time.perf_counter() - start, 2),
        }
        self.history.append(entry)
        self._latest = entry
        best = int(np.argmax(entry["scores"]))
        logger.info(
            f"sb_prune: convexity of '{self.label_column}' at {when}: "
            + " ".join(f"{s:.1f}" for s in entry["scores"])
            + f" (peak at depth {best})"
        )
        self.write()
        return entry["scores"]

    def pooled_states(self, brain):
        """Pooled hidden states ``[L + 1, N, D]``, labels and utterance IDs.

        Arguments
        ---------
        brain : sb.Brain
            Its ``compute_forward`` runs the model on batches with ``sig``.

        Returns
        -------
        states : torch.Tensor
            See :func:`~sb_prune.analysis.convexity.hidden_states.
            pooled_layer_states`.
        labels : list
            The label of every utterance.
        ids : list of str
            The ID of every utterance.
        """
        _, encoder = find_layer_stack(brain.unwrapped_modules(), self.encoder)
        loader = make_dataloader(self.dataset(), batch_size=self.batch_size)
        labels, ids = [], []

        def run(batch):
            labels.extend(batch.label)
            ids.extend(batch.id)
            brain.compute_forward(batch.to(brain.device), sb.Stage.VALID)
            return batch.sig[1]

        training = brain.modules.training
        brain.modules.eval()
        try:
            progress = if_main_process() and not brain.noprogressbar
            states = pooled_layer_states(encoder, loader, run, progress)
        finally:
            brain.modules.train(training)
        return states, labels, ids

    def _save_states(self, states, labels, ids, when):
        os.makedirs(self.output_folder, exist_ok=True)
        tag = when.replace(" ", "")
        path = os.path.join(self.output_folder, f"{self.name}_states_{tag}.npz")
        np.savez(
            path,
            states=states.numpy(),
            labels=np.asarray([str(label) for label in labels]),
            ids=np.asarray(ids),
        )

    def score(self, members):
        """The convexity of each layer's output in the latest scoring.

        Arguments
        ---------
        members : Members
            The ``layers`` of the scored encoder.

        Returns
        -------
        torch.Tensor
            ``[members.count]``: depths 1 to L of the curve.
        """
        if members.group != "layers":
            raise ValueError(
                f"ConvexityScoring scores layers, not {members.group} "
                f"('{members.path}')"
            )
        if self._latest is None:
            raise ValueError(
                "ConvexityScoring has not scored the model yet (observe_model)"
            )
        layers = self._latest["scores"][1:]
        if len(layers) != members.count:
            raise ValueError(
                f"ConvexityScoring scored {len(layers)} layers at "
                f"{self._latest['when']}, '{members.path}' has "
                f"{members.count}: score the model again"
            )
        return torch.tensor(layers, dtype=torch.float)

    def record_decision(self, decision):
        """Remember a :class:`LayerCut` decision and mark it in the plot.

        Arguments
        ---------
        decision : dict
            ``when``, ``rule``, ``kept`` and ``total``.
        """
        self.cut = decision
        self.write()

    def write(self):
        """Write ``<name>.json`` and ``<name>.png`` (main process only)."""
        if not if_main_process() or not self.history:
            return
        os.makedirs(self.output_folder, exist_ok=True)
        stem = os.path.join(self.output_folder, self.name)
        report = {
            "csv_file": str(self.csv_file),
            "label_column": self.label_column,
            "encoder": self.encoder,
            "n_neighbors": self.n_neighbors,
            "max_pairs": self.max_pairs,
            "seed": self.seed,
            "history": self.history,
            "cut": self.cut,
        }
        with open(f"{stem}.json", "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
        plot_convexity(
            self.history,
            f"{stem}.png",
            cut=self.cut,
            title=f"convexity of {self.label_column}",
        )

    def state_dict(self):
        """Return the scores so far and the cut, if any."""
        return {"history": self.history, "cut": self.cut}

    def load_state_dict(self, state):
        """Restore the scores (a resumed run does not score again)."""
        self.history = list(state["history"])
        self.cut = state.get("cut")
        self._latest = self.history[-1] if self.history else None
