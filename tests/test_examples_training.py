"""examples/train_example_msd.py and generate_example_data.py: resumable training that equals an
uninterrupted run, outputs that are never replaced unasked, and one-line errors before any work."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pruning_toolkit.experiments import cs_data as generate_example_data
from pruning_toolkit.experiments import msd_training as train_example_msd

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cs")
    generate_example_data.generate_example_data(folder, {"train": 5, "val": 2, "test": 1}, 32)
    return folder


def train(data, out, *extra):
    flags = ["--data", data, "--out", out, "--depth", "3", "--dilations", "1-2", "--threads", "1", "--quiet",
             "--train-images", "5", "--val-images", "2", *extra]
    return train_example_msd.report_errors([str(f) for f in flags])


def test_an_interrupted_run_resumed_equals_the_uninterrupted_run(tmp_path, data, monkeypatch):
    assert train(data, tmp_path / "straight.torch", "--epochs", "3") == 0
    # interrupted after epoch 2: the epoch loop is cut short, then --resume finishes it
    real_save = train_example_msd.msd_network.MSDSegmentationModel.save
    saved = []

    def save_then_stop(self, path, epoch, **extra):
        real_save(self, path, epoch, **extra)
        if extra:
            saved.append(epoch)
            if epoch == 2:
                raise KeyboardInterrupt
    monkeypatch.setattr(train_example_msd.msd_network.MSDSegmentationModel, "save", save_then_stop)
    assert train(data, tmp_path / "resumed.torch", "--epochs", "3") == 130
    monkeypatch.undo()
    assert train(data, tmp_path / "resumed.torch", "--epochs", "3", "--resume") == 0
    for name in ("straight", "resumed"):
        state = torch.load(tmp_path / f"{name}.resume.torch", weights_only=True)
        assert state["epoch"] == 3
    straight = torch.load(tmp_path / "straight.resume.torch", weights_only=True)["state_dict"]
    resumed = torch.load(tmp_path / "resumed.resume.torch", weights_only=True)["state_dict"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_an_existing_model_is_never_replaced_unasked(tmp_path, data, capsys):
    out = tmp_path / "model.torch"
    out.write_bytes(b"a shipped model")
    assert train(data, out, "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; pass another --out, --overwrite" in err
    assert out.read_bytes() == b"a shipped model"
    assert train(data, out, "--epochs", "1", "--overwrite") == 0
    assert out.read_bytes() != b"a shipped model"


def test_the_default_output_is_not_the_shipped_network():
    args = train_example_msd.parse_args(["--depth", "10"])
    assert args.out == ROOT / "examples" / "my_models" / "msd_network_d=10.torch"


@pytest.mark.parametrize("flags, message", [
    (["--val-images", "0"], "--val-images must be at least 1"),
    (["--train-images", "0"], "--train-images must be at least 1"),
    (["--threads", "-1"], "--threads must be at least 1"),
    (["--epochs", "0"], "--epochs must be at least 1"),
])
def test_bad_counts_are_one_line_before_any_work(tmp_path, data, flags, message):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "train_example_msd.py"), "--data", str(data),
                           "--out", str(tmp_path / "m.torch"), *flags], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") <= 2
    assert not (tmp_path / "m.torch").exists()


def test_output_paths_that_cannot_be_written_are_refused_before_training(tmp_path, data, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    cases = {blocker / "m.torch": "is not a folder", folder: "is a folder", Path(""): "must name a model file",
             Path("/proc/m.torch"): "cannot write there"}
    for out, message in cases.items():
        assert train(data, out, "--epochs", "1") == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (out, err)


def test_data_generation_refuses_sizes_it_cannot_hold_and_an_empty_out(tmp_path):
    script = str(ROOT / "examples" / "generate_example_data.py")
    for flags, message in ((["--size", "10000000", "--out", str(tmp_path / "d")], "--size must lie in [32, 8192]"),
                           (["--out", ""], "--out must name a data folder")):
        done = subprocess.run([sys.executable, script, *flags], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
