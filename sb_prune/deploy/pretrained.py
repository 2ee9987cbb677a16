"""Export a pruned ASR model as a SpeechBrain pretrained-model folder.

The folder holds a ``hyperparams.yaml`` that rebuilds the pruned
architecture (the dense model, the sb_prune conversions it went through and
its structure record), the checkpoint files and the tokenizer, so that
SpeechBrain's own interface loads it offline::

    from speechbrain.inference.ASR import EncoderASR
    asr = EncoderASR.from_hparams(source="exported/", savedir="exported/")
    asr.transcribe_file("utterance.flac")

:func:`export_pretrained` reads a finished run of
``recipes/LibriSpeech/ASR/train.py`` (any of its hparams files): it loads
the same checkpoints the recipe evaluated (the best ones of one structure,
averaged), removes the training-only adaptive-dropout layers, and writes
the folder.

Authors
 * sb_prune developers
"""

import json
import shutil
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import average_checkpoints
from speechbrain.utils.distributed import run_on_main

from sb_prune.core.structure import describe, restore
from sb_prune.deploy.strip import strip_adaptive_dropout
from sb_prune.methods.convert import convert, recorded_conversions
from sb_prune.training.brain import read_structure
from sb_prune.training.speechbrain_api import (
    copy_normalizer_statistics,
    save_normalizer,
)

STRIP = "strip_adaptive_dropout"
#: Hparams keys that define the recipe's architecture (and its features).
#: The TorchScript file ``--torchscript`` adds to an exported folder.
TORCHSCRIPT = "ctc_encoder.torchscript.pt"

ARCHITECTURE_KEYS = (
    "sample_rate",
    "n_mels",
    "blank_index",
    "d_model",
    "frame_stack",
    "output_neurons",
    "nhead",
    "num_encoder_layers",
    "d_ffn",
    "conv_kernel_size",
    "token_type",
)


def rebuild(model, structure, conversions=()):
    """Reshape a freshly built dense model into an exported architecture.

    Used by the ``hyperparams.yaml`` of exported folders
    (``!apply:sb_prune.deploy.pretrained.rebuild``).

    Arguments
    ---------
    model : torch.nn.Module
        The dense model, as the recipe builds it.
    structure : dict
        Structure record relative to ``model``.
    conversions : list
        ``[method, options]`` pairs applied in order: an
        :func:`sb_prune.convert` method, or ``strip_adaptive_dropout``.

    Returns
    -------
    torch.nn.Module
        The same model, ready for the exported state dict.
    """
    for method, options in conversions:
        if method == STRIP:
            strip_adaptive_dropout(model)
        else:
            convert(model, **{method: options})
    restore(model, structure)
    return model


_TEMPLATE = """\
# Pretrained CTC Conformer exported by sb_prune from {source}
# Load with speechbrain.inference.ASR.EncoderASR.from_hparams(source=...).
# The model is pruned: `rebuild` reshapes the dense model to the
# structure below before the checkpoint is loaded.

sample_rate: {sample_rate}
n_mels: {n_mels}
blank_index: {blank_index}
d_model: {d_model}
frame_stack: {frame_stack}
output_neurons: {output_neurons}
nhead: {nhead}
num_encoder_layers: {num_encoder_layers}
d_ffn: {d_ffn}
conv_kernel_size: {conv_kernel_size}
token_type: {token_type}

compute_features: !new:speechbrain.lobes.features.Fbank
    sample_rate: !ref <sample_rate>
    n_mels: !ref <n_mels>

normalize: !new:speechbrain.processing.features.InputNormalization
    norm_type: global

CNN: !new:speechbrain.nnet.CNN.Conv1d
    input_shape: [null, null, !ref <n_mels>]
    out_channels: !ref <d_model>
    kernel_size: !ref <frame_stack>
    stride: !ref <frame_stack>
    padding: valid

Transformer: !apply:sb_prune.deploy.pretrained.rebuild
    model: !new:{asr}.TransformerASR
        input_size: !ref <d_model>
        tgt_vocab: !ref <output_neurons>
        d_model: !ref <d_model>
        nhead: !ref <nhead>
        num_encoder_layers: !ref <num_encoder_layers>
        num_decoder_layers: 0
        d_ffn: !ref <d_ffn>
        dropout: 0.0
        encoder_module: conformer
        attention_type: RelPosMHAXL
        normalize_before: True
        causal: False
        kernel_size: !ref <conv_kernel_size>
    conversions: {conversions}
    structure: {structure}

transformer_encoder: !new:{asr}.EncoderWrapper
    transformer: !ref <Transformer>

ctc_lin: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <d_model>
    n_neurons: !ref <output_neurons>

log_softmax: !new:torch.nn.LogSoftmax
    dim: -1

encoder: !new:speechbrain.nnet.containers.LengthsCapableSequential
    compute_features: !ref <compute_features>
    normalize: !ref <normalize>
    CNN: !ref <CNN>
    transformer_encoder: !ref <transformer_encoder>
    ctc_lin: !ref <ctc_lin>
    log_softmax: !ref <log_softmax>

model: !new:torch.nn.ModuleList
    - [!ref <CNN>, !ref <Transformer>, !ref <ctc_lin>]

decoding_function: !name:speechbrain.decoders.ctc_greedy_decode
    blank_id: !ref <blank_index>

tokenizer: !new:sentencepiece.SentencePieceProcessor

modules:
    encoder: !ref <encoder>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        model: !ref <model>
        normalizer: !ref <normalize>
        tokenizer: !ref <tokenizer>
"""


def load_evaluated_checkpoints(hparams, min_key="WER"):
    """Load the checkpoints a recipe run evaluated into its modules.

    As the recipe does: the best checkpoints of the final structure (the
    latest checkpoint's), averaged.

    Arguments
    ---------
    hparams : dict
        The run's ``hyperparams.yaml``, loaded.
    min_key : str
        The checkpoint metric the recipe selected on.

    Returns
    -------
    int
        How many checkpoints were averaged.
    """
    modules = torch.nn.ModuleDict(hparams["modules"])
    checkpointer = hparams["checkpointer"]
    latest = checkpointer.find_checkpoint()
    if latest is None:
        raise FileNotFoundError(
            f"No checkpoint in {checkpointer.checkpoints_dir}: train first"
        )
    record = read_structure(latest)
    best = checkpointer.find_checkpoint(
        min_key=min_key, ckpt_predicate=lambda c: read_structure(c) == record
    )
    if best is None:
        raise FileNotFoundError(
            f"No checkpoint in {checkpointer.checkpoints_dir} records "
            f"{min_key}: not an ASR run"
        )
    if record is not None:
        restore(modules, record)
    checkpointer.load_checkpoint(best)
    same = checkpointer.find_checkpoints(
        min_key=min_key,
        max_num_checkpoints=hparams.get("avg_checkpoints", 1),
        ckpt_predicate=lambda ckpt: read_structure(ckpt) == record,
    )
    if len(same) > 1:
        state = average_checkpoints(same, recoverable_name="model")
        hparams["model"].load_state_dict(state, strict=True)
    return len(same)


def read_hparams(folder, argument):
    """Load ``hyperparams.yaml`` of a run folder or an exported folder.

    Arguments
    ---------
    folder : pathlib.Path
        The folder.
    argument : str
        What the user called it (named in the error).

    Returns
    -------
    dict
        The loaded hparams (modules built, no weights loaded).

    Raises
    ------
    FileNotFoundError
        Naming ``argument`` when the folder has no ``hyperparams.yaml``.
    """
    hparams_file = Path(folder) / "hyperparams.yaml"
    if not hparams_file.is_file():
        raise FileNotFoundError(
            f"{argument} {folder} is not a recipe run folder or exported "
            f"model: {hparams_file} is missing"
        )
    with open(hparams_file, encoding="utf-8") as handle:
        return load_hyperpyyaml(handle)


def export_pretrained(run_folder, out_folder, min_key="WER", torchscript=False):
    """Write a SpeechBrain pretrained-model folder from a recipe run.

    Arguments
    ---------
    run_folder : str
        The ``output_folder`` of a finished ``recipes/LibriSpeech/ASR`` run
        (it holds ``hyperparams.yaml`` and ``save/``).
    out_folder : str
        The folder to write (created if missing).
    min_key : str
        The checkpoint metric the recipe selected on.
    torchscript : bool
        Also write ``ctc_encoder.torchscript.pt`` (features in, CTC
        log-probabilities out; see :mod:`sb_prune.deploy.torchscript`) and
        measure its latency against the eager model.

    Returns
    -------
    dict
        What was exported: parameters, averaged checkpoints, files, and
        the TorchScript latency figures.
    """
    run_folder, out_folder = Path(run_folder), Path(out_folder)
    hparams = read_hparams(run_folder, "--source")
    averaged = load_evaluated_checkpoints(hparams, min_key)
    transformer = hparams["Transformer"].eval()
    conversions = [list(c) for c in recorded_conversions(transformer)]
    if conversions:
        strip_adaptive_dropout(transformer)
        conversions.append([STRIP, {}])
    out_folder.mkdir(parents=True, exist_ok=True)
    text = _TEMPLATE.format(
        source=run_folder,
        asr="speechbrain.lobes.models.transformer.TransformerASR",
        conversions=json.dumps(conversions),
        structure=json.dumps(describe(transformer)),
        **{key: hparams[key] for key in ARCHITECTURE_KEYS},
    )
    (out_folder / "hyperparams.yaml").write_text(text)
    torch.save(hparams["model"].state_dict(), out_folder / "model.ckpt")
    save_normalizer(hparams["normalize"], out_folder / "normalizer.ckpt")
    shutil.copy(tokenizer_file(run_folder), out_folder / "tokenizer.ckpt")
    summary = {
        "params": sum(p.numel() for p in hparams["model"].parameters()),
        "averaged_checkpoints": averaged,
        "folder": str(out_folder),
    }
    if torchscript:
        from sb_prune.deploy.torchscript import (
            compare_latency,
            trace_ctc_encoder,
        )

        traced, model = trace_ctc_encoder(hparams)
        traced.save(str(out_folder / TORCHSCRIPT))
        summary["torchscript"] = compare_latency(
            traced, model, hparams["n_mels"]
        )
    return summary


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


def tokenizer_file(source):
    """Return the SentencePiece model of a run folder or exported folder.

    Arguments
    ---------
    source : str
        See :func:`load_model`.

    Returns
    -------
    pathlib.Path
        The tokenizer model file.
    """
    source = Path(source)
    exported = source / "tokenizer.ckpt"
    if exported.is_file():
        return exported
    found = sorted((source / "save").glob("*.model"))
    if not found:
        raise FileNotFoundError(f"No tokenizer model in {source}")
    return found[0]


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
