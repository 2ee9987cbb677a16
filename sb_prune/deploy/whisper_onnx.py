"""Greedy transcription of a (pruned) Whisper folder under ONNX Runtime.

:func:`export_whisper_onnx` loads a folder that SpeechBrain's
``WhisperASR`` loads (one written by
:func:`~sb_prune.families.whisper.folders.export_whisper`, pruned or
dense), writes its graphs (:mod:`sb_prune.deploy.whisper_onnx_graphs`)
and the rules of the folder's greedy search (:func:`greedy_rules`: the
prompt, the suppressed tokens, the stop rules of SpeechBrain's
``S2SWhisperGreedySearcher``) in ``decoding.json``, with the mel filters
and the tokenizer. :func:`onnx_whisper_transcriber` reads that folder and
transcribes a waveform with ONNX Runtime (the log-mel is SpeechBrain's
Whisper front end, in PyTorch)::

    export_whisper_onnx("exported/", "exported/onnx")
    transcribe = onnx_whisper_transcriber("exported/onnx", threads=1)
    words, tokens = transcribe(wav)  # 16 kHz, one utterance

One utterance at a time (batch 1), greedy only: a folder that decodes
with beam search is transcribed greedily (``S2SWhisperGreedySearcher``
with the folder's longest hypothesis), language detection is not exported
(the folder must name its language, or be English-only), and the
searcher's temperature must be 0.

Authors
 * sb_prune developers
"""

import json
from pathlib import Path

import numpy as np
import torch

from sb_prune.core.atomic import complete_or_absent
from sb_prune.deploy.onnx import ort_inference_session
from sb_prune.deploy.whisper_onnx_graphs import (
    GRAPHS,
    export_whisper_graphs,
)

#: The decoding rules and front-end constants of an ONNX Whisper folder.
DECODING_FILE = "decoding.json"
#: The mel filters (mel bins, frequencies) of its front end.
MEL_FILE = "mel_filters.npy"
#: Where ``sb-prune export --onnx`` writes them in an exported folder.
ONNX_FOLDER = "onnx"


def greedy_rules(lobe, searcher, normalized_transcripts=False):
    """The rules of SpeechBrain's greedy Whisper search, as plain values.

    Arguments
    ---------
    lobe : torch.nn.Module
        SpeechBrain's Whisper lobe.
    searcher : torch.nn.Module
        ``S2SWhisperGreedySearcher`` (or ``S2SWhisperBeamSearcher``, whose
        longest hypothesis is kept for a greedy search).
    normalized_transcripts : bool
        Words of Whisper's English normaliser, as ``WhisperASR``.

    Returns
    -------
    dict
        ``prompt`` (the first tokens), ``suppress`` (tokens never
        decoded), ``suppress_first`` (nor at the first step), ``eos``,
        ``steps`` (most tokens), ``memory_limit`` (decoding stops once the
        prompt and the tokens decoded before the current one reach it),
        ``normalized_transcripts``, ``folder_beam_size`` (the beam width
        the folder decodes with in PyTorch, None for greedy) and the front
        end's ``n_fft``, ``hop_length``.

    Raises
    ------
    ValueError
        When the search is not one greedy decoding can reproduce.
    """
    from speechbrain.decoders.seq2seq import S2SWhisperGreedySearcher

    beam_size = getattr(searcher, "beam_size", None)

    if lobe.is_multilingual and lobe.language is None:
        raise ValueError(
            "export_whisper_onnx: the folder's Whisper detects the language "
            "(language: null), which is not exported; name it in "
            "hyperparams.yaml"
        )
    if not isinstance(searcher, S2SWhisperGreedySearcher):
        searcher = S2SWhisperGreedySearcher(
            lobe,
            min_decode_ratio=searcher.min_decode_ratio,
            max_decode_ratio=searcher.max_decode_ratio,
        )
    if searcher.temperature != 0:
        raise ValueError(
            f"export_whisper_onnx: the searcher samples (temperature "
            f"{searcher.temperature}); greedy decoding needs temperature 0"
        )
    frames = lobe.model.config.max_source_positions
    first = []
    if searcher.suppress_blank:
        blank = lobe.tokenizer.encode(" ", add_special_tokens=False)
        first = [*blank, searcher.eos_index]
    return {
        "prompt": list(searcher.initial_tokens),
        "suppress": list(
            searcher.get_tokens_to_suppress if searcher.suppress_tokens else ()
        ),
        "suppress_first": first,
        "eos": searcher.eos_index,
        "steps": int(frames * searcher.max_decode_ratio)
        - int(frames * searcher.min_decode_ratio),
        "memory_limit": searcher.max_attn_tokens - searcher.sample_begin,
        "normalized_transcripts": bool(normalized_transcripts),
        "folder_beam_size": beam_size,
        "n_fft": lobe._n_fft,
        "hop_length": lobe._hop_length,
    }


class OnnxWhisperGreedy:
    """Greedy decoding with the graphs of :func:`export_whisper_graphs`.

    Arguments
    ---------
    folder : str or pathlib.Path
        The folder of the graphs.
    rules : dict
        See :func:`greedy_rules`.
    threads : int, optional
        ONNX Runtime's intra-op threads (default: torch's).
    """

    def __init__(self, folder, rules, threads=None):
        folder = Path(folder)
        self.rules = rules
        self.sessions = {
            part: ort_inference_session(folder / name, threads)
            for part, name in GRAPHS.items()
        }
        decoder = self.sessions["decoder"]
        self.cross_names = [
            i.name for i in decoder.get_inputs() if i.name.startswith("cross")
        ]
        self.empty_cache = {
            i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
            for i in decoder.get_inputs()
            if i.name.startswith("self")
        }

    def encode(self, mel):
        """Encoder states of a (1, mel bins, frames) log-mel."""
        mel = np.ascontiguousarray(mel.detach().cpu().numpy(), np.float32)
        return self.sessions["encoder"].run(None, {"mel": mel})[0]

    def decode(self, mel):
        """The tokens decoded after the prompt, and their scores.

        Arguments
        ---------
        mel : torch.Tensor
            A (1, mel bins, frames) log-mel.

        Returns
        -------
        tokens : list of int
            The tokens, as SpeechBrain's greedy searcher decodes them
            (without the end of text).
        scores : numpy.ndarray
            (steps, vocabulary): the decoder's logits at each step, before
            suppression.
        """
        rules = self.rules
        states = self.encode(mel)
        cross = self.sessions["cross_kv"].run(None, {"states": states})
        feed = dict(zip(self.cross_names, cross))
        feed.update(self.empty_cache)
        step_tokens, tokens, scores = rules["prompt"], [], []
        for step in range(rules["steps"]):
            feed["tokens"] = np.array([step_tokens], dtype=np.int64)
            logits, *grown = self.sessions["decoder"].run(None, feed)
            feed.update(zip(self.empty_cache, grown))
            scores.append(logits[0].copy())
            logits = logits[0]
            if step == 0:
                logits[rules["suppress_first"]] = -np.inf
            logits[rules["suppress"]] = -np.inf
            token = int(logits.argmax())
            if token == rules["eos"]:
                break
            tokens.append(token)
            if len(rules["prompt"]) + step >= rules["memory_limit"]:
                break
            step_tokens = [token]
        return tokens, np.stack(scores)


def export_asr_onnx(asr, out_folder, atol=1e-4):
    """Write a loaded ``WhisperASR``'s graphs, rules and tokenizer.

    Arguments
    ---------
    asr : speechbrain.inference.ASR.WhisperASR
        The model (its lobe ``asr.mods.whisper``, pruned or not, and its
        searcher ``asr.mods.decoder``).
    out_folder : str or pathlib.Path
        Where to write (created if missing).
    atol : float
        Largest difference allowed between ONNX Runtime and PyTorch.

    Returns
    -------
    dict
        :func:`export_whisper_graphs`'s summary, ``rules`` and ``folder``.
    """
    lobe = asr.mods.whisper.eval()
    with complete_or_absent(Path(out_folder)) as out:
        summary = export_whisper_graphs(lobe.model, out, atol)
        rules = greedy_rules(
            lobe,
            asr.mods.decoder,
            getattr(asr.hparams, "normalized_transcripts", False),
        )
        (out / DECODING_FILE).write_text(json.dumps(rules))
        np.save(out / MEL_FILE, lobe._mel_filters.numpy())
        lobe.tokenizer.save_pretrained(str(out))
        # save_pretrained leaves out the English normaliser's spellings, which
        # normalize() reads from normalizer.json when the tokenizer loads.
        spellings = getattr(lobe.tokenizer, "english_spelling_normalizer", None)
        if spellings is not None:
            (out / "normalizer.json").write_text(json.dumps(spellings))
    summary["rules"] = rules
    summary["folder"] = str(out_folder)
    return summary


def export_whisper_onnx(folder, out_folder=None, atol=1e-4):
    """Write a Whisper folder's graphs and greedy rules for ONNX Runtime.

    Arguments
    ---------
    folder : str or pathlib.Path
        A folder ``WhisperASR`` loads (written by ``export_whisper`` or
        ``convert_whisper``; pruned parts are rebuilt).
    out_folder : str or pathlib.Path, optional
        Where to write (default: ``<folder>/onnx``).
    atol : float
        Largest difference allowed between ONNX Runtime and PyTorch.

    Returns
    -------
    dict
        See :func:`export_asr_onnx`.
    """
    from speechbrain.inference.ASR import WhisperASR

    folder = Path(folder).resolve()
    asr = WhisperASR.from_hparams(
        source=str(folder),
        savedir=str(folder),
        overrides={"whisper_folder": str(folder)},
    )
    return export_asr_onnx(asr, out_folder or folder / ONNX_FOLDER, atol=atol)


def onnx_whisper_transcriber(folder, threads=None):
    """A function transcribing one utterance under ONNX Runtime.

    Arguments
    ---------
    folder : str or pathlib.Path
        A folder written by :func:`export_whisper_onnx`, or the Whisper
        folder holding it in ``onnx/``.
    threads : int, optional
        ONNX Runtime's intra-op threads (default: torch's).

    Returns
    -------
    callable
        ``transcribe(wav) -> (words, tokens)``: ``wav`` a 16 kHz waveform
        (samples,) or (1, samples); ``words`` as ``WhisperASR``'s
        ``transcribe_batch`` gives them (the text, or the normalised words
        with ``normalized_transcripts``), ``tokens`` the decoded ids.
    """
    from transformers import AutoTokenizer

    from sb_prune.families.whisper.lobe import WhisperFeatures

    folder = Path(folder)
    if not (folder / DECODING_FILE).is_file():
        folder = folder / ONNX_FOLDER
    rules = json.loads((folder / DECODING_FILE).read_text())
    greedy = OnnxWhisperGreedy(folder, rules, threads)
    front_end = WhisperFeatures(
        torch.from_numpy(np.load(Path(folder) / MEL_FILE)),
        rules["n_fft"],
        rules["hop_length"],
    )
    # As SpeechBrain's Whisper lobe loads it.
    tokenizer = AutoTokenizer.from_pretrained(
        str(folder), bos_token="<|startoftranscript|>"
    )

    def transcribe(wav):
        tokens, _ = greedy.decode(front_end(wav))
        words = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        if rules["normalized_transcripts"]:
            words = tokenizer.normalize(words).split(" ")
        return words, tokens

    return transcribe
