"""The recipes' SentencePiece tokenizer, trained locally on transcripts.

Authors
 * sb_prune developers
"""

from speechbrain.tokenizers.SentencePiece import SentencePiece


def train_tokenizer(hparams):
    """Train (or load, when ``save_folder`` holds it) the tokenizer.

    SpeechBrain's ``SentencePiece`` trains on the ``wrd`` column of
    ``train_csv`` unless ``<save_folder>/<output_neurons>_<token_type>.model``
    exists, which is how a copied tokenizer (``init_from``, an LM sharing
    the ASR tokens) is reused.

    Arguments
    ---------
    hparams : dict
        Recipe hparams: ``save_folder``, ``output_neurons``, ``train_csv``,
        ``token_type``, ``bos_index``, ``eos_index``.

    Returns
    -------
    SentencePiece
        The tokenizer.

    Raises
    ------
    ValueError
        If the vocabulary does not fit in ``output_neurons``.
    """
    tokenizer = SentencePiece(
        model_dir=hparams["save_folder"],
        vocab_size=hparams["output_neurons"],
        annotation_train=hparams["train_csv"],
        annotation_read="wrd",
        model_type=hparams["token_type"],
        character_coverage=1.0,
        bos_id=hparams["bos_index"],
        eos_id=hparams["eos_index"],
    )
    if tokenizer.sp.vocab_size() > hparams["output_neurons"]:
        raise ValueError(
            f"output_neurons ({hparams['output_neurons']}) is smaller than "
            f"the tokenizer's vocabulary ({tokenizer.sp.vocab_size()})"
        )
    return tokenizer
