"""SpeechBrain's Whisper lobe: per-utterance features, low-rank tables.

:class:`WhisperLobe` is SpeechBrain's ``Whisper`` lobe (same arguments,
same outputs for one utterance and a dense decoder) with two changes:

* its log-mel features floor each utterance at 8 below that utterance's
  own maximum, as Whisper does; SpeechBrain's lobe floors a whole batch at
  8 below the batch's maximum, so an utterance's features (the padding to
  30 s above all) depended on the others in its batch, and so did its
  transcript (Whisper tiny.en, greedy, batches of 8: 7 of 60 real
  utterances decoded otherwise than one by one);
* its decoder step scores through the factors of a
  :class:`~sb_prune.methods.low_rank.embedding.LowRankEmbedding` when the
  decoder has one (``sb_prune.convert(..., low_rank_embedding={rank:
  R})``), so the product per decoded token costs ``R`` / width of the
  dense one; SpeechBrain's lobe scores with the dense ``embed_tokens``.

Hparams files swap the class: ``!new:sb_prune.nn.WhisperLobe``; the
folders sb_prune writes for ``WhisperASR`` build it.
:class:`WhisperFeatures` computes the same features without the model (for
runtimes that hold only graphs and constants).

Authors
 * sb_prune developers
"""

import torch
from speechbrain.integrations.huggingface.whisper import Whisper


class WhisperLobe(Whisper):
    """SpeechBrain's Whisper lobe: per-utterance features, low-rank tables.

    ``speechbrain.integrations.huggingface.whisper.Whisper``, each
    utterance's features computed alone, a low-rank token table scored
    through its factors.

    Arguments are those of SpeechBrain's Whisper lobe.
    """

    #: What the family's ``low_rank_embedding`` answer checks (the family
    #: module does not import this one: ``transformers`` may be missing).
    scores_through_factors = True

    def log_mel_spectrogram(self, audio, padding=0):
        """SpeechBrain's log-mel features, each utterance floored alone.

        Arguments
        ---------
        audio : torch.Tensor
            ``(batch, samples)`` at 16 kHz (or one utterance, 1-D).
        padding : int
            Zeros appended to each utterance first.

        Returns
        -------
        torch.Tensor
            ``(batch, n_mels, frames)``: each utterance's features as
            SpeechBrain's lobe computes them for that utterance alone.
        """
        if audio.dim() < 2:
            return super().log_mel_spectrogram(audio, padding)
        one_by_one = [
            super(WhisperLobe, self).log_mel_spectrogram(row[None], padding)
            for row in audio
        ]
        return torch.cat(one_by_one)

    def forward_decoder(
        self,
        encoder_states,
        decoder_input_ids,
        use_cache=True,
        past_key_values=None,
    ):
        """One decoder step, as SpeechBrain's; low-rank tables factored.

        Arguments
        ---------
        encoder_states, decoder_input_ids, use_cache, past_key_values
            As for SpeechBrain's ``Whisper.forward_decoder``.

        Returns
        -------
        logits : torch.Tensor
            The decoder's scores of the vocabulary.
        attn : torch.Tensor or None
            The last layer's attention, if ``output_attentions``.
        past_key_values : object
            The key/value cache.
        """
        table = self.model.decoder.embed_tokens
        if not hasattr(table, "logits"):
            return super().forward_decoder(
                encoder_states, decoder_input_ids, use_cache, past_key_values
            )
        if past_key_values is not None:  # the cache holds the other tokens
            decoder_input_ids = decoder_input_ids[:, -1:]
        states = self.model.decoder(
            encoder_hidden_states=encoder_states,
            input_ids=decoder_input_ids,
            past_key_values=past_key_values,
            output_attentions=self.output_attentions,
            use_cache=use_cache,
        )
        attn = None
        if self.output_attentions:
            last = states.attentions[-1]
            attn = last.reshape(-1, *last.shape[2:])
        logits = table.logits(states.last_hidden_state).float()
        return logits, attn, states.past_key_values


class WhisperFeatures:
    """SpeechBrain's Whisper log-mel of one utterance, from constants.

    The lobe's own padding to 30 s and log-mel, without its model: what a
    runtime holding only graphs (ONNX) feeds the encoder.

    Arguments
    ---------
    mel_filters : torch.Tensor
        ``(n_mels, n_fft // 2 + 1)``, the lobe's ``_mel_filters``.
    n_fft, hop_length : int
        The lobe's ``_n_fft`` and ``_hop_length``.

    Example
    -------
    >>> features = WhisperFeatures(torch.rand(80, 201), 400, 160)
    >>> features(torch.randn(16000)).shape
    torch.Size([1, 80, 3000])
    """

    def __init__(self, mel_filters, n_fft, hop_length):
        self._mel_filters = mel_filters
        self._n_fft = n_fft
        self._hop_length = hop_length

    def __call__(self, wav):
        """``(1, n_mels, 3000)`` features of a 1-D 16 kHz ``wav``."""
        padded = Whisper.pad_or_trim(self, wav.float().reshape(1, -1))
        return Whisper.log_mel_spectrogram(self, padded)
