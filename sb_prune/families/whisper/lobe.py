"""SpeechBrain's Whisper lobe, scoring tokens through a low-rank table.

SpeechBrain's ``Whisper`` lobe scores the vocabulary with the decoder's
dense token table (``embed_tokens.weight``). :class:`WhisperLobe` is the
same lobe (same arguments, same outputs for a dense decoder) whose decoder
step scores through the factors of a
:class:`~sb_prune.methods.low_rank.embedding.LowRankEmbedding` when the
decoder has one (``sb_prune.convert(..., low_rank_embedding={rank: R})``),
so the product per decoded token costs ``R`` / width of the dense one.
Hparams files swap the class: ``!new:sb_prune.nn.WhisperLobe``.

Authors
 * sb_prune developers
"""

from speechbrain.integrations.huggingface.whisper import Whisper


class WhisperLobe(Whisper):
    """``speechbrain.integrations.huggingface.whisper.Whisper``, factored.

    Arguments are those of SpeechBrain's Whisper lobe.
    """

    #: What the family's ``low_rank_embedding`` answer checks (the family
    #: module does not import this one: ``transformers`` may be missing).
    scores_through_factors = True

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
