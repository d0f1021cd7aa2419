"""Toy-model training (pruning_toolkit.toy_model): an interrupted and resumed run equals the
uninterrupted one bit for bit on the CPU; the command never replaces shipped models unasked."""
import pytest
import torch

import toy_datasets
from pruning_toolkit import toy_model

pytestmark = pytest.mark.usefixtures("one_thread")


def small_run(X, y, epochs, state_path=None, every=5):
    torch.manual_seed(0)
    model = toy_model.build_model(2, hidden_width=32)
    return toy_model.train(model, X, y, epochs, "sgd", quiet=True, state_path=state_path, every=every)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_interrupted_and_resumed_training_equals_straight_through(tmp_path, monkeypatch, optimizer):
    X, y = toy_datasets.generate("moon", 200, 0)
    X, y = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
    torch.manual_seed(0)
    straight = toy_model.train(toy_model.build_model(2, hidden_width=32), X, y, 23, optimizer, quiet=True)
    state = tmp_path / "state.pt"
    real_loss = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def loss_then_die(*args, **kwargs):              # killed during epoch 13 (last state: epoch 10)
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)
    torch.manual_seed(0)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", loss_then_die)
    with pytest.raises(KeyboardInterrupt):
        toy_model.train(toy_model.build_model(2, hidden_width=32), X, y, 23, optimizer, quiet=True,
                        state_path=state, every=5)
    monkeypatch.undo()
    assert torch.load(state, weights_only=True)["epoch"] == 10
    torch.manual_seed(123)                           # whatever the seed now: the state decides
    resumed = toy_model.train(toy_model.build_model(2, hidden_width=32), X, y, 23, optimizer, quiet=True,
                              state_path=state, every=5)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_stored_state_of_another_recipe_or_further_on_is_refused(tmp_path):
    X, y = toy_datasets.generate("moon", 50, 0)
    X, y = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
    small_run(X, y, 8, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="at epoch 8; resume it with the same optimizer and at least as many"):
        small_run(X, y, 5, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="a run with --optimizer sgd is stored there"):
        torch.manual_seed(0)
        toy_model.train(toy_model.build_model(2, hidden_width=32), X, y, 9, "adam", quiet=True,
                        state_path=tmp_path / "state.pt")


def test_a_finished_run_continued_to_more_epochs_equals_the_longer_run(tmp_path):
    X, y = toy_datasets.generate("moon", 100, 0)
    X, y = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
    longer = small_run(X, y, 12)
    small_run(X, y, 7, tmp_path / "state.pt")
    continued = small_run(X, y, 12, tmp_path / "state.pt")
    for (name, a), b in zip(longer.state_dict().items(), continued.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_command_never_replaces_existing_models_unasked(tmp_path, capsys):
    (tmp_path / "moon.pt").write_bytes(b"shipped")
    with pytest.raises(SystemExit) as exit_info:
        toy_model.main(["--dataset", "moon", "--out", str(tmp_path), "--epochs", "1"])
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "moon.pt").read_bytes() == b"shipped"
