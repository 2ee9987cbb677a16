"""N-best rescoring of CTC hypotheses with a (pruned) Transformer LM.

:class:`LMRescorer` runs SpeechBrain's ``CTCBeamSearcher`` to get the
``nbest`` best hypotheses of each utterance with their CTC scores, scores
each hypothesis with a character language model exported by the LM recipe
(:func:`sb_prune.core.saved_model.export_model` plus its
``tokenizer.model``), and keeps the one with the best
``ctc + lm_weight * lm + length_bonus * characters``. It is how an ASR
user applies the pruned LM: the LM recipe
exports dense, pruned and low-rank LMs alike, and the rescorer rebuilds
any of them from the structure record.

Authors
 * sb_prune developers
"""

import os

import torch
from speechbrain.decoders.ctc import CTCBeamSearcher

from sb_prune.core.saved_model import load_exported


class LMRescorer:
    """Rescore the n-best CTC beam-search hypotheses with an LM.

    Arguments
    ---------
    language_model : torch.nn.Module
        The LM, built as the LM recipe built it (same ``sb_prune.convert``
        options); its trained, possibly pruned, weights are loaded from
        ``lm_folder`` on first use.
    lm_folder : str
        The LM recipe's export folder (``model.ckpt``, ``structure.json``,
        ``tokenizer.model``).
    lm_weight : float
        Weight of the LM log-probability, >= 0 (0: beam search alone).
    length_bonus : float
        Added per character of the hypothesis.
    nbest : int
        Hypotheses kept per utterance, >= 1.
    beam_size : int
        Beam of the CTC search, >= nbest.
    blank_index : int
        The CTC blank.
    bos_index : int
        The LM's begin-of-sentence token.
    eos_index : int
        The LM's end-of-sentence token.

    Example
    -------
    >>> LMRescorer(torch.nn.Linear(2, 2), ".", nbest=8, beam_size=4)
    Traceback (most recent call last):
    ...
    ValueError: beam_size (4) must be >= nbest (8)
    """

    def __init__(
        self,
        language_model,
        lm_folder,
        lm_weight=0.5,
        length_bonus=0.0,
        nbest=8,
        beam_size=16,
        blank_index=0,
        bos_index=1,
        eos_index=2,
    ):
        if lm_weight < 0:
            raise ValueError(f"lm_weight must be >= 0, got {lm_weight}")
        if nbest < 1:
            raise ValueError(f"nbest must be >= 1, got {nbest}")
        if beam_size < nbest:
            raise ValueError(
                f"beam_size ({beam_size}) must be >= nbest ({nbest})"
            )
        self.language_model = language_model
        self.lm_folder = lm_folder
        self.lm_weight = lm_weight
        self.length_bonus = length_bonus
        self.nbest = nbest
        self.beam_size = beam_size
        self.blank_index = blank_index
        self.bos_index = bos_index
        self.eos_index = eos_index
        self.lm_tokenizer = None
        self._searcher = None

    def _load(self, device):
        import sentencepiece

        load_exported(self.language_model, self.lm_folder)
        self.language_model.to(device).eval()
        self.lm_tokenizer = sentencepiece.SentencePieceProcessor(
            model_file=os.path.join(self.lm_folder, "tokenizer.model")
        )

    @torch.no_grad()
    def lm_scores(self, texts):
        """Return the LM log-probability of each text (with its <eos>).

        Arguments
        ---------
        texts : list of str
            Upper-case words separated by spaces.

        Returns
        -------
        torch.Tensor
            ``[len(texts)]`` log-probabilities.
        """
        ids = [self.lm_tokenizer.encode_as_ids(text) for text in texts]
        longest = max(len(i) for i in ids) + 1
        device = next(self.language_model.parameters()).device
        inputs = torch.zeros(len(ids), longest, dtype=torch.long)
        targets = torch.zeros(len(ids), longest, dtype=torch.long)
        mask = torch.zeros(len(ids), longest)
        for row, tokens in enumerate(ids):
            inputs[row, : len(tokens) + 1] = torch.tensor(
                [self.bos_index] + tokens
            )
            targets[row, : len(tokens) + 1] = torch.tensor(
                tokens + [self.eos_index]
            )
            mask[row, : len(tokens) + 1] = 1.0
        log_probs = self.language_model(inputs.to(device)).log_softmax(-1)
        picked = log_probs.gather(-1, targets.to(device)[..., None])[..., 0]
        return (picked * mask.to(device)).sum(-1).cpu()

    def __call__(self, log_probs, wav_lens, tokenizer):
        """Decode a batch: beam search, then LM rescoring of the n-best.

        Arguments
        ---------
        log_probs : torch.Tensor
            ``[B, T, vocab]`` CTC log-probabilities.
        wav_lens : torch.Tensor
            ``[B]`` relative lengths.
        tokenizer : speechbrain.tokenizers.SentencePiece.SentencePiece
            The ASR recipe's tokenizer (its pieces name the CTC outputs).

        Returns
        -------
        list of list of str
            The words of the best hypothesis of each utterance.
        """
        if self.lm_tokenizer is None:
            self._load(log_probs.device)
        pieces = tokenizer.sp.vocab_size()
        if self._searcher is None:
            # Character pieces with "▁" as a space: the searcher's own word
            # boundaries (its SentencePiece mode expects word pieces, and
            # drops the last character of character pieces).
            vocab = [
                tokenizer.sp.id_to_piece(i).replace("\u2581", " ")
                for i in range(pieces)
            ]
            self._searcher = CTCBeamSearcher(
                blank_index=self.blank_index,
                vocab_list=vocab,
                space_token=" ",
                beam_size=self.beam_size,
                topk=self.nbest,
                prune_history=False,
            )
        # The searcher floors lens * T: round first (as greedy decoding
        # does), or the last frame of most utterances is lost.
        frames = log_probs.shape[1]
        wav_lens = (torch.round(wav_lens * frames) + 0.5) / frames
        # Outputs beyond the tokenizer's pieces are never targets: drop them.
        hypotheses = self._searcher(log_probs[..., :pieces], wav_lens)
        best = []
        for nbest in hypotheses:
            texts = [hyp.text for hyp in nbest] or [""]
            scores = torch.tensor([hyp.score for hyp in nbest] or [0.0])
            if self.lm_weight > 0:
                scores = scores + self.lm_weight * self.lm_scores(texts)
            lengths = torch.tensor([len(text) for text in texts])
            scores = scores + self.length_bonus * lengths
            best.append(texts[int(scores.argmax())].split(" "))
        return best
