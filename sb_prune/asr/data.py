"""The data of the CTC Conformer ASR recipe: CSV manifests and datasets.

Authors
 * sb_prune developers
"""

from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.distributed import run_on_main

from sb_prune.data.librispeech import prepare_librispeech
from sb_prune.data.synthesize import synthesize_corpus


def prepare_data(hparams):
    """Write the CSV manifests (synthesising the default corpus first).

    Arguments
    ---------
    hparams : dict
        Recipe hparams: ``data_folder``, ``synthetic_folder`` and
        ``synthetic_corpus`` (the corpus made when ``data_folder`` is the
        synthetic one), ``output_folder``, the splits and ``skip_prep``.
    """
    data_folder = Path(hparams["data_folder"]).resolve()
    synthetic = Path(hparams["synthetic_folder"]).resolve() / "LibriSpeech"
    if data_folder == synthetic:
        run_on_main(
            synthesize_corpus,
            kwargs={
                "out_dir": hparams["synthetic_folder"],
                **hparams["synthetic_corpus"],
            },
        )
    run_on_main(
        prepare_librispeech,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["output_folder"],
            "tr_splits": hparams["train_splits"],
            "dev_splits": hparams["dev_splits"],
            "te_splits": hparams["test_splits"],
            "merge_lst": hparams["train_splits"],
            "merge_name": "train.csv",
            "skip_prep": hparams["skip_prep"],
        },
    )


def dataio_prepare(hparams, tokenizer):
    """Build the train, valid and test datasets of the CSV manifests.

    Arguments
    ---------
    hparams : dict
        Recipe hparams: ``data_folder`` (``$data_root`` in the CSV files),
        ``train_csv``, ``valid_csv``, ``test_csv`` (a list) and
        ``sorting``.
    tokenizer : speechbrain.tokenizers.SentencePiece.SentencePiece
        The tokenizer of the transcriptions.

    Returns
    -------
    tuple
        ``(train, valid, tests)``: datasets, ``tests`` by CSV file stem.
    """
    data_folder = hparams["data_folder"]

    def load(csv_path, sort):
        data = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=csv_path, replacements={"data_root": data_folder}
        )
        return data.filtered_sorted(sort_key="duration") if sort else data

    train = load(hparams["train_csv"], hparams["sorting"] == "ascending")
    valid = load(hparams["valid_csv"], True)
    tests = {Path(p).stem: load(p, True) for p in hparams["test_csv"]}

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        try:
            return sb.dataio.dataio.read_audio(wav)
        except Exception as error:
            raise RuntimeError(
                f"Cannot read audio file {wav}: {error}"
            ) from error

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens")
    def text_pipeline(wrd):
        yield wrd
        yield torch.LongTensor(tokenizer.sp.encode_as_ids(wrd))

    datasets = [train, valid, *tests.values()]
    sb.dataio.dataset.add_dynamic_item(datasets, audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(datasets, text_pipeline)
    sb.dataio.dataset.set_output_keys(datasets, ["id", "sig", "wrd", "tokens"])
    return train, valid, tests
