"""The adapter to SpeechBrain's private API fails loudly when it changes."""

import pytest
import speechbrain as sb

from sb_prune.training import speechbrain_api


def test_the_installed_speechbrain_has_what_sb_prune_uses():
    speechbrain_api.check_private_api()


def test_a_removed_private_method_is_reported(monkeypatch):
    monkeypatch.delattr(sb.Brain, "_wrap_distributed")
    with pytest.raises(RuntimeError, match="Brain._wrap_distributed is gone"):
        speechbrain_api.check_private_api()


def test_a_changed_signature_is_reported(monkeypatch):
    def fit_train(self, train_set, epoch):  # "enable" dropped
        return None

    monkeypatch.setattr(sb.Brain, "_fit_train", fit_train)
    with pytest.raises(RuntimeError, match="Brain._fit_train takes"):
        speechbrain_api.check_private_api()


def test_pruning_brain_overrides_only_the_listed_private_method():
    from sb_prune import PruningBrain

    overridden = {
        name
        for name in vars(PruningBrain)
        if name.startswith("_")
        and not name.startswith("__")
        and hasattr(sb.Brain, name)
    }
    assert overridden == {speechbrain_api.TRAIN_EPOCH_METHOD}
