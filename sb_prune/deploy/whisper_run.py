"""Export a run of SpeechBrain's Whisper recipes as a pretrained folder.

``sb-prune export`` reads a finished run of a recipe shaped like
SpeechBrain's ``recipes/LibriSpeech/ASR/transformer/train_with_whisper.py``
(``hparams/train_hf_whisper.yaml``): its hparams build SpeechBrain's
Whisper lobe as the module ``whisper``, from a Hugging Face Whisper folder
(``source``: a local folder, e.g. one written by
:func:`sb_prune.importers.ctranslate2.convert_whisper`, or a hub model
that the lobe downloaded into its ``save_path``), and decode with
``S2SWhisperGreedySearcher`` or ``S2SWhisperBeamSearcher``.
:func:`export_whisper_run` loads the checkpoint the recipe tested (the
best of the final structure, reshaped to its structure record first) and
writes it with :func:`sb_prune.families.whisper.folders.export_whisper`:
pruned parts rebuilt from their structure records, the others in
``model.safetensors``, decoding as the run's searcher did (beam width,
hypothesis length, normalised transcripts)::

    from speechbrain.inference.ASR import WhisperASR
    asr = WhisperASR.from_hparams(source="exported/", savedir="exported/")

A run of the CTC recipe (``recipes/LibriSpeech/ASR/CTC/train_with_whisper.py``,
``hparams/train_hf_whisper_encoder.yaml``: an ``encoder_only`` Whisper,
then the keys ``enc``, ``ctc_lin``, ``log_softmax``, the head's weights in
``model`` and a SentencePiece tokenizer) exports for ``EncoderASR``: the
Whisper encoder as above, then the run's own head (its blocks copied from
the run's ``hyperparams.yaml``), decoding with the run's
``test_beam_search`` (``CTCBeamSearcher``) if it has one, else greedily::

    from speechbrain.inference.ASR import EncoderASR
    asr = EncoderASR.from_hparams(source="exported/", savedir="exported/")

Authors
 * sb_prune developers
"""

import logging
import shutil
from pathlib import Path

import torch
from ruamel.yaml.comments import TaggedScalar

from sb_prune.core.atomic import complete_or_absent
from sb_prune.deploy.hparams_subset import dump, keep_keys, load, tagged
from sb_prune.deploy.run_folders import (
    load_evaluated_checkpoints,
    read_hparams,
    tokenizer_file,
)
from sb_prune.families.whisper.faster_whisper import export_ctranslate2
from sb_prune.families.whisper.folders import (
    ENCODER_STRUCTURE,
    MAX_DECODE_RATIO,
    WHISPER_LOBES,
    write_whisper_folder,
)

logger = logging.getLogger(__name__)

#: The CTC recipe's keys after the Whisper encoder, in order.
CTC_HEAD = ("enc", "ctc_lin", "log_softmax")
#: The keys an exported CTC folder's hyperparams.yaml adds to the run's.
_CTC_ADDED = (
    "whisper_folder",
    "whisper",
    "sb_prune_encoder",
    "encoder",
    "test_beam_search",
    "decoding_function",
    "tokenizer",
    "modules",
    "pretrainer",
)
#: The searchers a Whisper export may decode with, in preference: the one
#: the recipe tests with first.
WHISPER_SEARCHERS = ("test_search", "valid_search")


def whisper_source(hparams_file):
    r"""The Whisper folder a run's ``whisper`` module is built from, if any.

    Arguments
    ---------
    hparams_file : pathlib.Path
        A run's ``hyperparams.yaml`` (not built: nothing is loaded).

    Returns
    -------
    pathlib.Path or None
        When the module ``whisper`` is SpeechBrain's Whisper lobe: its
        ``source`` folder, or the snapshot of the hub model ``source`` in
        the lobe's ``save_path`` (where it downloads to); None for another
        run.

    Raises
    ------
    FileNotFoundError
        Naming the file, when that folder is not here.

    Example
    -------
    >>> run = Path(getfixture("tmp_path"))
    >>> _ = (run / "hyperparams.yaml").write_text(
    ...     "modules:\n  whisper: !new:speechbrain.integrations.huggingface"
    ...     f".whisper.Whisper\n    source: openai/whisper-tiny\n"
    ...     f"    save_path: {run}/save\n"
    ... )
    >>> whisper_source(run / "hyperparams.yaml")
    Traceback (most recent call last):
    ...
    FileNotFoundError: export: ...hyperparams.yaml builds its Whisper from
    openai/whisper-tiny, which is neither a Hugging Face Whisper folder (no
    config.json) nor a hub model downloaded into .../save...
    >>> snapshot = run / "save/models--openai--whisper-tiny/snapshots/ab12"
    >>> snapshot.mkdir(parents=True)
    >>> _ = (snapshot / "config.json").write_text("{}")
    >>> whisper_source(run / "hyperparams.yaml") == snapshot
    True
    """
    document = load(Path(hparams_file).read_text(encoding="utf-8"))
    modules = document.get("modules") if hasattr(document, "get") else None
    node = modules.get("whisper") if hasattr(modules, "get") else None
    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag not in {f"!new:{name}" for name in WHISPER_LOBES}:
        return None
    source, save_path = str(node.get("source")), node.get("save_path")
    candidates = [Path(source)]
    if save_path is not None:
        cache = f"models--{source.replace('/', '--')}"
        candidates += sorted(Path(str(save_path), cache, "snapshots").glob("*"))
    for folder in candidates:
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(
        f"export: {hparams_file} builds its Whisper from {source}, which is "
        "neither a Hugging Face Whisper folder (no config.json) nor a hub "
        f"model downloaded into {save_path}: put the Whisper the run "
        "started from there again (e.g. convert it with "
        "sb_prune.importers.ctranslate2.convert_whisper)"
    )


def export_whisper_run(
    run_folder,
    out_folder,
    min_key="WER",
    search=None,
    ctranslate2=None,
    onnx=False,
):
    """Write the model a Whisper recipe run tested as a pretrained folder.

    Arguments
    ---------
    run_folder : str or pathlib.Path
        The ``output_folder`` of a finished run (``hyperparams.yaml``,
        ``save/`` with checkpoints).
    out_folder : str or pathlib.Path
        The folder to write (created if missing).
    min_key : str
        The checkpoint metric the recipe selected on.
    search : str, optional
        An encoder-decoder run's searcher to decode with, its hparams key
        (default ``test_search``, else ``valid_search``).
    ctranslate2 : dict, optional
        An encoder-decoder run: also write ``<out_folder>/ctranslate2``
        for CTranslate2 and faster-whisper, with these options of
        :func:`~sb_prune.families.whisper.faster_whisper.export_ctranslate2`.
    onnx : bool
        An encoder-decoder run: also write ``<out_folder>/onnx`` for ONNX
        Runtime
        (:func:`~sb_prune.deploy.whisper_onnx.export_whisper_onnx`).

    Returns
    -------
    dict
        What was exported: the parameters (the Whisper's and a CTC
        head's), the encoder's and decoder's, the pruned parts, the
        checkpoints loaded, the interface, the folder and the CTranslate2
        model's layers and heads.
    """
    run_folder = Path(run_folder)
    hparams_file = run_folder / "hyperparams.yaml"
    source = whisper_source(hparams_file)
    if source is None:
        raise ValueError(
            f"export: {hparams_file} does not build SpeechBrain's Whisper "
            f"({WHISPER_LOBES[0]}) as the module whisper"
        )
    hparams = read_hparams(run_folder, "--source")
    whisper = hparams["modules"]["whisper"]
    if whisper.encoder_only:
        if ctranslate2 is not None or onnx:
            raise ValueError(
                f"export: --ctranslate2 and --onnx write Whisper's "
                f"encoder-decoder; {hparams_file} decodes with a CTC head, "
                "which faster-whisper and the ONNX transcriber do not run"
            )
        return _export_ctc(run_folder, hparams, source, out_folder, min_key)
    beam_size, max_decode_ratio = _decoding(hparams, hparams_file, search)
    averaged = load_evaluated_checkpoints(hparams, min_key)
    out = Path(out_folder)
    with complete_or_absent(out) as scratch:  # ctranslate2/ included
        summary = write_whisper_folder(
            whisper,
            source,
            scratch,
            out.resolve(),
            beam_size=beam_size,
            max_decode_ratio=max_decode_ratio,
            normalized_transcripts=bool(hparams.get("normalized_transcripts")),
        )
        if ctranslate2 is not None:
            summary["ctranslate2"] = export_ctranslate2(
                scratch, scratch / "ctranslate2", **ctranslate2
            )
            summary["ctranslate2"]["folder"] = str(out / "ctranslate2")
        if onnx:
            from sb_prune.deploy.whisper_onnx import export_whisper_onnx

            summary["onnx"] = export_whisper_onnx(scratch)
            summary["onnx"]["folder"] = str(out / "onnx")
    summary["folder"] = str(out)
    summary["params"] = sum(p.numel() for p in whisper.parameters())
    summary["averaged_checkpoints"] = averaged
    summary["interface"] = "WhisperASR"
    return summary


def _decoding(hparams, hparams_file, search):
    """``(beam_size or None, max_decode_ratio)`` of the run's searcher."""
    from speechbrain.decoders.seq2seq import (
        S2SWhisperBeamSearcher,
        S2SWhisperGreedySearcher,
    )

    if search is None:
        search = next(
            (key for key in WHISPER_SEARCHERS if key in hparams),
            WHISPER_SEARCHERS[0],
        )
    searcher = hparams.get(search)
    if not isinstance(
        searcher, (S2SWhisperBeamSearcher, S2SWhisperGreedySearcher)
    ):
        raise ValueError(
            f"export: {hparams_file} has no Whisper searcher {search} "
            f"(got {type(searcher).__name__}); name one with --search "
            "(S2SWhisperGreedySearcher or S2SWhisperBeamSearcher)"
        )
    ratio = searcher.max_decode_ratio
    if ratio > MAX_DECODE_RATIO:
        logger.info(
            f"{search}: max_decode_ratio {ratio} exported as "
            f"{MAX_DECODE_RATIO}, which keeps Whisper's decoder within its "
            "positions"
        )
        ratio = MAX_DECODE_RATIO
    if isinstance(searcher, S2SWhisperGreedySearcher):
        return None, ratio
    return searcher.beam_size, ratio


def _export_ctc(run_folder, hparams, source, out_folder, min_key):
    """Export a run of the Whisper CTC recipe for ``EncoderASR``."""
    hparams_file = run_folder / "hyperparams.yaml"
    missing = [key for key in (*CTC_HEAD, "model") if key not in hparams]
    if missing:
        raise ValueError(
            f"export: {hparams_file} builds an encoder-only Whisper but has "
            f"no {missing}: a Whisper CTC recipe exports with the keys "
            f"{list(CTC_HEAD)} after whisper, and model (the head's weights)"
        )
    averaged = load_evaluated_checkpoints(hparams, min_key)
    out = Path(out_folder)
    with complete_or_absent(out) as scratch:
        summary = write_whisper_folder(
            hparams["whisper"], source, scratch, out.resolve()
        )
        torch.save(hparams["model"].state_dict(), scratch / "model.ckpt")
        shutil.copy(tokenizer_file(run_folder), scratch / "tokenizer.ckpt")
        document = _encoder_asr_document(
            hparams_file.read_text(encoding="utf-8"),
            out.resolve(),
            pruned="encoder" in summary["pruned"],
        )
        (scratch / "hyperparams.yaml").write_text(
            f"# Exported by sb_prune from {run_folder.resolve()} for\n"
            "# speechbrain.inference.ASR.EncoderASR: the Whisper encoder of "
            "this\n# folder (if it moves, pass overrides={'whisper_folder': "
            "<path>}),\n# then the run's blocks.\n" + dump(document)
        )
    summary["folder"] = str(out)
    summary["params"] = sum(
        p.numel()
        for key in ("whisper", "model")
        for p in hparams[key].parameters()
    )
    summary["averaged_checkpoints"] = averaged
    summary["interface"] = "EncoderASR"
    return summary


def _ref(text):
    """A hyperpyyaml reference node, ``!ref <key>...``."""
    return TaggedScalar(text, tag="!ref")


def _encoder_asr_document(text, folder, pruned):
    """The run's head blocks plus the Whisper encoder and inference keys."""
    run = load(text)
    document = keep_keys(run, [*CTC_HEAD, "model"])
    plain = (str, int, float, bool, type(None))
    clash = [
        key
        for key in _CTC_ADDED
        if key in document and not isinstance(document[key], plain)
    ]
    if clash:
        raise ValueError(
            f"export: the head's blocks use the hparams keys {clash}, which "
            "the exported hyperparams.yaml needs for inference"
        )
    document["whisper_folder"] = str(folder)
    options = dict(run["modules"]["whisper"])
    options.update(
        source=_ref("<whisper_folder>"),
        save_path=_ref("<whisper_folder>"),
        freeze=True,
    )
    whisper = tagged(run["modules"]["whisper"].tag.value, options)
    document["whisper"] = whisper
    loadables = {"model": document["model"]}
    if pruned:
        document["sb_prune_encoder"] = tagged(
            "!apply:sb_prune.families.whisper.folders.rebuild_encoder",
            {
                "whisper": whisper,
                "structure": _ref(f"<whisper_folder>/{ENCODER_STRUCTURE}"),
            },
        )
        loadables["encoder"] = document["sb_prune_encoder"]
    steps = {"whisper": whisper, **{key: document[key] for key in CTC_HEAD}}
    document["encoder"] = tagged(
        "!new:speechbrain.nnet.containers.LengthsCapableSequential", steps
    )
    beam = run.get("test_beam_search")
    if hasattr(beam, "items"):
        # EncoderASR fetches kenlm_model_path whenever the key is there.
        document["test_beam_search"] = {
            key: value
            for key, value in beam.items()
            if key != "kenlm_model_path" or value is not None
        }
        document["decoding_function"] = tagged(
            "!name:speechbrain.decoders.ctc.CTCBeamSearcher"
        )
    else:
        document["decoding_function"] = tagged(
            "!name:speechbrain.decoders.ctc_greedy_decode",
            {"blank_id": int(run.get("blank_index", 0))},
        )
    document["tokenizer"] = tagged("!new:sentencepiece.SentencePieceProcessor")
    loadables["tokenizer"] = document["tokenizer"]
    document["modules"] = {"encoder": document["encoder"]}
    document["pretrainer"] = tagged(
        "!new:speechbrain.utils.parameter_transfer.Pretrainer",
        {"loadables": loadables},
    )
    return document
