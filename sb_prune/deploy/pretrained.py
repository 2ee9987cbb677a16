"""Export a pruned ASR model as a SpeechBrain pretrained-model folder.

The folder holds a ``hyperparams.yaml`` that rebuilds the pruned
architecture from the run's own ``hyperparams.yaml`` (the blocks the model
is built from, with every constructor option and the ``sb_prune.convert``
they went through, then the structure record), the checkpoint files and
the tokenizer, so that SpeechBrain's own interface loads it offline::

    from speechbrain.inference.ASR import EncoderASR
    asr = EncoderASR.from_hparams(source="exported/", savedir="exported/")
    asr.transcribe_file("utterance.flac")

:func:`export_pretrained` reads a finished run of a recipe shaped like
SpeechBrain's LibriSpeech ones: CTC (hparams keys ``compute_features``,
``normalize``, ``CNN``, ``Transformer``, ``ctc_lin``, ``log_softmax``;
``recipes/LibriSpeech/ASR`` and SpeechBrain's ``ASR/CTC``) for
``EncoderASR``, or encoder-decoder (a ``Transformer`` with decoder layers
and a beam searcher, SpeechBrain's ``ASR/transformer``) for
``EncoderDecoderASR``. It loads the same checkpoints the recipe evaluated
(the best ones of the final structure, averaged), removes the
training-only adaptive-dropout layers, and writes the folder. A run of
SpeechBrain's Whisper recipe exports for ``WhisperASR``
(:mod:`sb_prune.deploy.whisper_run`).

Authors
 * sb_prune developers
"""

import logging
import shutil
from pathlib import Path

import torch
from speechbrain.utils.distributed import run_on_main

from sb_prune.core.atomic import complete_or_absent
from sb_prune.core.structure import describe, restore
from sb_prune.deploy.hparams_subset import dump, keep_keys, load, tagged
from sb_prune.deploy.run_folders import (
    load_evaluated_checkpoints,
    read_hparams,
    tokenizer_file,
)
from sb_prune.methods.adaptive_dropout.strip import strip_adaptive_dropout
from sb_prune.methods.convert import convert, recorded_conversions
from sb_prune.training.speechbrain_api import (
    copy_normalizer_statistics,
    save_normalizer,
)

logger = logging.getLogger(__name__)

#: The TorchScript file ``--torchscript`` adds to an exported folder.
TORCHSCRIPT = "ctc_encoder.torchscript.pt"
#: The hparams keys of a CTC recipe's inference pipeline, in order.
CTC_PIPELINE = (
    "compute_features",
    "normalize",
    "CNN",
    "Transformer",
    "ctc_lin",
    "log_softmax",
)
#: Keys the exported hyperparams.yaml adds to the run's.
_ADDED = (
    "sb_prune_rebuild",
    "sb_prune_encoder",
    "encoder",
    "decoding_function",
    "tokenizer",
    "modules",
    "pretrainer",
)


#: The first line of an exported hyperparams.yaml names the run.
_FROM_PREFIX = "# Exported by sb_prune from "
_FROM_SUFFIX = ": the run's blocks, then"


def exported_from(folder):
    """The run folder an exported folder was written from, or None.

    Arguments
    ---------
    folder : str or pathlib.Path
        Any folder.

    Returns
    -------
    pathlib.Path or None
        The run folder :func:`export_pretrained` read, if ``folder`` is an
        export.
    """
    path = Path(folder) / "hyperparams.yaml"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        first = handle.readline().rstrip("\n")
    if first.startswith(_FROM_PREFIX) and first.endswith(_FROM_SUFFIX):
        return Path(first[len(_FROM_PREFIX) : -len(_FROM_SUFFIX)])
    return None


def rebuild(modules, structure, strip=True):
    """Reshape freshly built modules into an exported architecture.

    Used by the ``hyperparams.yaml`` of exported folders
    (``!apply:sb_prune.deploy.pretrained.rebuild``), after the modules are
    built as the run built them (``sb_prune.convert`` included).

    Arguments
    ---------
    modules : dict
        The run's modules by name (the structure record's paths start with
        these names).
    structure : dict
        The structure record of the exported model.
    strip : bool
        Replace adaptive-dropout layers by their inference form first.

    Returns
    -------
    torch.nn.ModuleDict
        The modules, reshaped in place.
    """
    modules = torch.nn.ModuleDict(dict(modules))
    if strip:
        for module in modules.values():
            strip_adaptive_dropout(module)
    restore(modules, structure)
    return modules


def export_pretrained(
    run_folder,
    out_folder,
    min_key="WER",
    torchscript=False,
    search=None,
    onnx=False,
    ctranslate2=None,
):
    """Write a SpeechBrain pretrained-model folder from a recipe run.

    Arguments
    ---------
    run_folder : str
        The ``output_folder`` of a finished CTC recipe run (it holds
        ``hyperparams.yaml``, ``save/`` with checkpoints and a SentencePiece
        tokenizer).
    out_folder : str
        The folder to write, whole or not at all (an existing one is
        replaced: see :func:`sb_prune.core.atomic.complete_or_absent`).
    min_key : str
        The checkpoint metric the recipe selected on.
    torchscript : bool
        Also write ``ctc_encoder.torchscript.pt`` (features in, CTC
        log-probabilities out; see :mod:`sb_prune.deploy.torchscript`) and
        measure its latency against the eager model.
    search : str, optional
        For an encoder-decoder run: the hparams key of the beam searcher
        the exported model decodes with (default: ``valid_search``, else
        ``test_search``; both are SpeechBrain recipes' names).
    onnx : bool
        Also write ``ctc_encoder.onnx`` (batch 1, any length; see
        :mod:`sb_prune.deploy.onnx`), checked under ONNX Runtime; for an
        encoder-decoder Whisper run, the folder's ``onnx/`` (encoder,
        decoder with its key/value cache, greedy rules: see
        :mod:`sb_prune.deploy.whisper_onnx`).
    ctranslate2 : dict, optional
        For an encoder-decoder Whisper run: also write the folder's
        ``ctranslate2/``, for CTranslate2 and faster-whisper, with these
        options of
        :func:`sb_prune.families.whisper.faster_whisper.export_ctranslate2`
        (``quantization``, ``pad_heads``, ``dense_table``).

    Returns
    -------
    dict
        What was exported: parameters, averaged checkpoints, the inference
        interface, the folder, the TorchScript latency figures and the
        ONNX check.
    """
    run_folder, out_folder = Path(run_folder), Path(out_folder)
    if _is_whisper_run(run_folder):
        from sb_prune.deploy.whisper_run import export_whisper_run

        if torchscript:
            raise ValueError(
                "export: --torchscript writes CTC Transformer encoders; "
                f"{run_folder} is a Whisper run (--onnx and --ctranslate2 "
                "export it)"
            )
        return export_whisper_run(
            run_folder, out_folder, min_key, search, ctranslate2, onnx
        )
    if ctranslate2 is not None:
        raise ValueError(
            f"export: --ctranslate2 writes Whisper models; {run_folder} is "
            "not a run of SpeechBrain's Whisper recipe"
        )
    hparams = read_hparams(run_folder, "--source")
    text = (run_folder / "hyperparams.yaml").read_text(encoding="utf-8")
    if search is None:
        search = next((k for k in SEARCHERS if k in hparams), SEARCHERS[0])
    _check_exportable(hparams, run_folder, search)
    averaged = load_evaluated_checkpoints(hparams, min_key)
    modules = {
        name: module
        for name, module in hparams["modules"].items()
        if any(module is kept for kept in _weight_modules(hparams))
    }
    for module in modules.values():
        module.eval()
        strip_adaptive_dropout(module)
    record = describe(torch.nn.ModuleDict(modules))
    document = _exported_document(text, hparams, modules, record, search)
    with complete_or_absent(out_folder) as scratch:
        summary = _write_exported(
            scratch, run_folder, hparams, modules, document, torchscript, onnx
        )
    summary.update(
        averaged_checkpoints=averaged,
        interface=_interface(hparams),
        folder=str(out_folder),
    )
    return summary


def _write_exported(out, run_folder, hparams, modules, document, ts, onnx):
    """Write an exported folder's files into ``out``; return its figures."""
    (out / "hyperparams.yaml").write_text(
        f"{_FROM_PREFIX}{Path(run_folder).resolve()}{_FROM_SUFFIX}\n"
        "# the pruned structure (sb_prune_rebuild) and the inference keys of\n"
        f"# speechbrain.inference.ASR.{_interface(hparams)}.\n" + dump(document)
    )
    for name in _weight_files(hparams):
        torch.save(hparams[name].state_dict(), out / f"{name}.ckpt")
    save_normalizer(hparams["normalize"], out / "normalize.ckpt")
    shutil.copy(tokenizer_file(run_folder), out / "tokenizer.ckpt")
    summary = {
        "params": sum(
            p.numel() for m in modules.values() for p in m.parameters()
        ),
    }
    if ts:
        from sb_prune.deploy.torchscript import (
            compare_latency,
            trace_ctc_encoder,
        )

        traced, model = trace_ctc_encoder(hparams)
        traced.save(str(out / TORCHSCRIPT))
        summary["torchscript"] = compare_latency(
            traced, model, hparams["n_mels"]
        )
    if onnx:
        from sb_prune.deploy.onnx import ONNX_FILE, export_ctc_onnx

        summary["onnx"] = export_ctc_onnx(hparams, out / ONNX_FILE)
    return summary


#: The hparams keys of an encoder-decoder recipe's encoder, in order.
SEQ2SEQ_ENCODER = ("compute_features", "normalize", "CNN", "Transformer")
#: The beam searchers an encoder-decoder export may use, in preference.
SEARCHERS = ("valid_search", "test_search")


def _is_whisper_run(run_folder):
    """Whether a run folder's hparams build SpeechBrain's Whisper lobe."""
    from sb_prune.deploy.whisper_run import whisper_source

    hparams_file = Path(run_folder) / "hyperparams.yaml"
    return hparams_file.is_file() and whisper_source(hparams_file) is not None


def is_encoder_decoder(hparams):
    """Whether a run's Transformer has decoder layers.

    Arguments
    ---------
    hparams : dict
        The run's loaded hparams.

    Returns
    -------
    bool
        True for an encoder-decoder (attention) recipe.
    """
    decoder = getattr(hparams.get("Transformer"), "decoder", None)
    return decoder is not None and len(getattr(decoder, "layers", [])) > 0


def _interface(hparams):
    """The SpeechBrain inference class that loads the export."""
    return "EncoderDecoderASR" if is_encoder_decoder(hparams) else "EncoderASR"


def _pipeline(hparams, search):
    """The keys an export keeps as roots (besides the weight files)."""
    if is_encoder_decoder(hparams):
        return list(SEQ2SEQ_ENCODER) + [search]
    return list(CTC_PIPELINE)


def _check_exportable(hparams, run_folder, search):
    needed = _pipeline(hparams, search)
    missing = [key for key in needed + ["modules"] if key not in hparams]
    if not missing and is_encoder_decoder(hparams):
        _check_searcher_weights(hparams, search)
    if missing:
        kind = "an encoder-decoder" if is_encoder_decoder(hparams) else "a CTC"
        raise ValueError(
            f"export: {run_folder}/hyperparams.yaml has no {missing}; "
            f"{kind} recipe exports with the keys {needed} and modules "
            "(a Whisper run, with SpeechBrain's Whisper lobe as the module "
            "whisper)"
        )


def _check_searcher_weights(hparams, search):
    """Refuse a searcher whose modules' weights the export does not hold."""
    searcher = hparams[search]
    if not isinstance(searcher, torch.nn.Module):
        return
    held = {
        id(p)
        for name in _weight_files(hparams) + ["normalize"]
        for p in hparams[name].parameters()
    }
    missing = [
        name
        for name, param in searcher.named_parameters()
        if id(param) not in held
    ]
    if missing:
        raise ValueError(
            f"export: the searcher {search} uses parameters the run does not "
            f"checkpoint with the model (e.g. {missing[0]}: a language "
            "model?); export with --search naming a searcher without it "
            f"(e.g. {SEARCHERS[0]})"
        )


def _weight_modules(hparams):
    """The run's modules the export holds."""
    keys = list(CTC_PIPELINE) + ["seq_lin"]
    return [hparams[key] for key in keys if key in hparams]


def _weight_files(hparams):
    """The keys whose state dicts the folder holds (``model`` if any)."""
    if "model" in hparams:
        return ["model"]
    names = ("CNN", "Transformer", "seq_lin", "ctc_lin")
    return [key for key in names if key in hparams]


def _exported_document(text, hparams, modules, record, search):
    """The run's model blocks plus the structure and the inference keys."""
    run = load(text)
    roots = _pipeline(hparams, search) + _weight_files(hparams)
    document = keep_keys(run, roots)
    # The run may have keys of these names (upstream recipes have a
    # tokenizer and a pretrainer); they clash only if the model uses them.
    clash = [key for key in _ADDED if key in document]
    if clash:
        raise ValueError(
            f"export: the model's blocks use the hparams keys {clash}, which "
            "the exported hyperparams.yaml needs for inference"
        )
    document["sb_prune_rebuild"] = tagged(
        "!apply:sb_prune.deploy.pretrained.rebuild",
        {
            "modules": {name: run["modules"][name] for name in modules},
            "structure": record,
            "strip": True,
        },
    )
    document["sb_prune_encoder"] = tagged(
        "!new:speechbrain.lobes.models.transformer.TransformerASR."
        "EncoderWrapper",
        {"transformer": document["Transformer"]},
    )
    seq2seq = is_encoder_decoder(hparams)
    steps = {
        key: document[key]
        for key in (SEQ2SEQ_ENCODER if seq2seq else CTC_PIPELINE)
    }
    steps["Transformer"] = document["sb_prune_encoder"]
    document["encoder"] = tagged(
        "!new:speechbrain.nnet.containers.LengthsCapableSequential", steps
    )
    document["modules"] = {"encoder": document["encoder"]}
    if seq2seq:
        document["modules"]["decoder"] = document[search]
    else:
        document["decoding_function"] = tagged(
            "!name:speechbrain.decoders.ctc_greedy_decode",
            {"blank_id": int(hparams.get("blank_index", 0))},
        )
    document["tokenizer"] = tagged("!new:sentencepiece.SentencePieceProcessor")
    loadables = {name: document[name] for name in _weight_files(hparams)}
    loadables["normalize"] = document["normalize"]
    loadables["tokenizer"] = document["tokenizer"]
    document["pretrainer"] = tagged(
        "!new:speechbrain.utils.parameter_transfer.Pretrainer",
        {"loadables": loadables},
    )
    return document


def load_model(source):
    """Build and load the model of a run folder or an exported folder.

    Arguments
    ---------
    source : str
        A ``recipes/LibriSpeech/ASR`` run folder (the checkpoints the recipe
        evaluated are loaded) or a folder written by
        :func:`export_pretrained`.

    Returns
    -------
    dict
        The source's hparams, with its modules holding the trained
        weights.
    """
    source = Path(source)
    hparams = read_hparams(source, "source")
    if (source / "save").is_dir():
        load_evaluated_checkpoints(hparams)
    else:
        pretrainer = hparams["pretrainer"]
        pretrainer.set_collect_in(source / "collected")
        pretrainer.collect_files(default_source=str(source))
        pretrainer.load_collected()
    return hparams


def initialize_from(hparams, source):
    """Initialise a recipe's model and tokenizer from a trained dense model.

    The source (see :func:`load_model`) must be dense: it is converted the
    way the recipe's model was (``sb_prune.convert`` options recorded on
    it), then its weights and feature statistics are copied in, and its
    tokenizer is copied where the recipe's tokenizer looks first (the
    main process writes it; call this on every process).

    Arguments
    ---------
    hparams : dict
        The recipe's loaded hparams (``model``, ``normalize``,
        ``Transformer``, ``save_folder``, ``output_neurons``,
        ``token_type``).
    source : str
        A dense run folder or exported folder.
    """
    loaded = load_model(source)
    transformer = loaded["Transformer"]
    if recorded_conversions(transformer):
        raise ValueError(
            f"init_from {source} holds a converted (pruned) model: start "
            "from a dense model"
        )
    for method, options in recorded_conversions(hparams["Transformer"]):
        convert(transformer, **{method: options})
    hparams["model"].load_state_dict(loaded["model"].state_dict())
    copy_normalizer_statistics(loaded["normalize"], hparams["normalize"])
    name = f"{hparams['output_neurons']}_{hparams['token_type']}.model"
    run_on_main(
        _copy_file,
        args=[tokenizer_file(source), Path(hparams["save_folder"]) / name],
    )


def _copy_file(source, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
