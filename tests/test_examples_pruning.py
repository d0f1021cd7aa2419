"""The pruning examples end to end (examples/prune_example_msd.py, prune_example_resnet50.py):
--quick runs with their saved models and results, resuming, the plot entry, and bad input."""
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import msd
from lean_helpers import conv_macs_by_hooks
from pruning_toolkit.experiments import cs_data as generate_example_data
from pruning_toolkit.experiments import fcn_segmentation
from pruning_toolkit.experiments import msd_pruning as prune_example_msd
from pruning_toolkit.experiments import pruning_run as pruning_experiment
from pruning_toolkit.experiments import resnet_pruning as prune_example_resnet50
from pruning_toolkit.experiments import results as plot_results

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

LABELS = ("LEAN", "indivL1", "indivSV")


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_data(tmp_path_factory):
    """The CS set --quick generates (20/5/5 images of 64 x 64), made once for the module."""
    folder = tmp_path_factory.mktemp("cs")
    generate_example_data.generate_example_data(folder, pruning_experiment.QUICK_DATA["counts"], 64)
    return folder


def run_in_process(script, argv, capsys):
    """Run a script's main as its command line does; returns (exit status, stdout, stderr)."""
    status = pruning_experiment.report_errors(script.PROG, script.main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def quick_flags(tmp_path, data, model_name):
    return ["--quick", "--quiet", "--data", data, "--model", tmp_path / model_name,
            "--out", tmp_path / "pruned", "--results", tmp_path / "results"]


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def check_schedule_and_files(rows, pruned_dir, pattern):
    """Rows: each method's steps 0..3 on 0.05 ** (step / 3), one start accuracy; files named as the rows."""
    assert [(r["method"], int(r["step"])) for r in rows] == [(m, s) for m in LABELS for s in range(4)]
    assert len({r["test_accuracy"] for r in rows if r["step"] == "0"}) == 1
    names = sorted(p.name for p in pruned_dir.iterdir())
    assert names == sorted(r["model_file"] for r in rows if r["step"] != "0")
    for row in rows:
        step = int(row["step"])
        assert float(row["target_kept"]) == pytest.approx(0.05 ** (step / 3), abs=1e-6)
        if step:
            match = re.fullmatch(pattern, row["model_file"])
            assert match, row["model_file"]
            assert match["method"] == row["method"]
            assert match["ratio"] == f"{0.05 ** (step / 3):.4f}"
            assert match["acc"] == f"{float(row['test_accuracy']):.4f}"
    for label in LABELS:
        kept = [float(r["kept_fraction"]) for r in rows if r["method"] == label]
        assert kept[0] == 1 and all(a >= b for a, b in zip(kept, kept[1:])) and kept[-1] < 0.2


def kept_kernels(module, name):
    """(out, in) bools: kernels whose stored mask is not all zero (all kept when never pruned)."""
    mask = getattr(module, name + "_mask", None)
    if mask is None:
        mask = torch.ones_like(getattr(module, name))
    return mask.reshape(mask.shape[0], mask.shape[1], -1).any(-1)


def pixel_accuracy(net, data):
    """Pixel accuracy on the test TIFFs, read directly, argmax over the classes."""
    correct = total = 0
    net.eval()
    for noisy_path in sorted((data / "test" / "noisy").glob("*.tiff")):
        image = torch.from_numpy(tifffile.imread(noisy_path)).float()[None, None]
        label = torch.from_numpy(tifffile.imread(data / "test" / "label" / noisy_path.name).astype(np.int64))
        with torch.no_grad():
            scores = net(image)
        scores = scores["out"] if isinstance(scores, dict) else scores
        correct += int((scores[0].argmax(0) == label).sum())
        total += label.numel()
    return correct / total


def test_msd_quick_run_saves_every_step_and_resumes_identically(tmp_path, quick_data, capsys):
    flags = quick_flags(tmp_path, quick_data, "msd_d10.torch")
    status, out, err = run_in_process(prune_example_msd, flags, capsys)
    assert status == 0, err
    assert (tmp_path / "msd_d10.torch").is_file()            # trained first: it was missing
    results = tmp_path / "results"
    rows = read_rows(results / "results.csv")
    check_schedule_and_files(rows, tmp_path / "pruned",
                             r"msd_network_(?P<method>\w+)_d=10_ratio=(?P<ratio>\d\.\d{4})_acc=(?P<acc>\d\.\d{4})\.torch")
    for row in rows[1:]:
        model = msd.MSDSegmentationModel(1, 5, 10, 1, device="cpu")
        model.load(tmp_path / "pruned" / row["model_file"])
        block = model.msd.msd_block
        kept = sum(int(kept_kernels(block, f"weight{k}").sum()) for k in range(10)) / sum(range(1, 11))
        assert kept == pytest.approx(float(row["kept_fraction"]), abs=1e-6)
        assert not hasattr(model.msd.final_layer.linear, "weight_mask")     # 3x3 variants only
        assert pixel_accuracy(model.net, quick_data) == pytest.approx(float(row["test_accuracy"]), abs=1e-6)

    table = (results / "results.md").read_text().splitlines()
    assert table[0].split("|")[1:-1] == [f" {h} " for h in ["step", "target kept", "LEAN kept", "LEAN acc",
                                                            "indivL1 kept", "indivL1 acc", "indivSV kept",
                                                            "indivSV acc"]]
    assert len(table) == 2 + 4
    assert (results / "accuracy_vs_kept.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (results / "accuracy_vs_kept.svg").read_bytes()[:500]

    # an interrupted run: the last step of the last method is lost; --resume redoes just that step
    last = rows[-1]
    (tmp_path / "pruned" / last["model_file"]).unlink()
    with open(results / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]), lineterminator="\n")   # the layout the run wrote
        writer.writeheader()
        writer.writerows(rows[:-1])
    status, out, err = run_in_process(prune_example_msd, flags + ["--resume"], capsys)
    assert status == 0, err
    assert "LEAN: all 3 steps already" in out
    resumed = read_rows(results / "results.csv")
    assert len(resumed) == len(rows)
    ignore_time = lambda row: {k: v for k, v in row.items() if k != "seconds"}  # noqa: E731
    assert ignore_time(resumed[-1]) == ignore_time(last)
    assert (tmp_path / "pruned" / last["model_file"]).is_file()


def test_resnet_quick_run_prunes_every_convolution_of_a_narrow_fcn(tmp_path, quick_data, capsys):
    status, out, err = run_in_process(prune_example_resnet50, quick_flags(tmp_path, quick_data, "fcn.torch"),
                                      capsys)
    assert status == 0, err
    rows = read_rows(tmp_path / "results" / "results.csv")
    check_schedule_and_files(rows, tmp_path / "pruned",
                             r"fcn_resnet50_(?P<method>\w+)_ratio=(?P<ratio>\d\.\d{4})_acc=(?P<acc>\d\.\d{4})\.torch")
    for row in (rows[1], rows[7]):
        model = fcn_segmentation.FCNSegmentationModel(5, 1, "cpu", **fcn_segmentation.NARROW_SHAPE)
        model.load(tmp_path / "pruned" / row["model_file"])
        convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
        kept = sum(int(kept_kernels(c, "weight").sum()) for c in convs) / sum(
            c.out_channels * c.in_channels for c in convs)
        assert kept == pytest.approx(float(row["kept_fraction"]), abs=1e-6)
        assert pixel_accuracy(model.net, quick_data) == pytest.approx(float(row["test_accuracy"]), abs=1e-6)


def test_kept_schedule_is_the_references_constant_factor_per_step():
    ratio, steps = 0.05, 15
    factor = np.exp(np.log(ratio) / steps)
    np.testing.assert_allclose(pruning_experiment.kept_schedule(ratio, steps), factor ** np.arange(1, 16),
                               rtol=1e-12)
    assert pruning_experiment.kept_schedule(ratio, steps)[-1] == pytest.approx(ratio, rel=1e-15)


@pytest.mark.parametrize("script", [prune_example_msd, prune_example_resnet50])
@pytest.mark.parametrize("flags, message", [
    (["--ratio", "0"], "--ratio is the final fraction of convolutions kept and must lie in (0, 1], got 0.0"),
    (["--ratio", "1.5"], "must lie in (0, 1], got 1.5"),
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--epochs", "-1"], "--epochs must be at least 0, got -1"),
])
def test_bad_flags_give_one_line_and_status_2(script, flags, message, capsys):
    status, out, err = run_in_process(script, flags, capsys)
    assert status == 2
    assert err.strip() == f"{script.PROG}: error: {err.strip().split(': error: ')[1]}"
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_model_is_reported_with_the_training_command(tmp_path, capsys):
    status, out, err = run_in_process(prune_example_msd, ["--model", tmp_path / "none.torch"], capsys)
    assert status == 1
    assert "model file not found" in err and "train_example_msd.py --depth 50" in err
    assert len(err.strip().splitlines()) == 1


def test_resnet_script_rejects_an_msd_checkpoint(tmp_path, quick_data, capsys):
    checkpoint = tmp_path / "msd.torch"
    msd.MSDSegmentationModel(1, 5, 4, 1, device="cpu").save(checkpoint, 0)
    status, out, err = run_in_process(prune_example_resnet50, quick_flags(tmp_path, quick_data, "msd.torch"),
                                      capsys)
    assert status == 1
    assert f"{checkpoint}: not a checkpoint of this narrow FCN-ResNet50 (1 input channel(s), 5 classes)" in err
    assert "missing keys (e.g. backbone.conv1.weight)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "results").exists()


def test_an_interrupted_start_model_training_resumed_equals_the_uninterrupted_one(tmp_path, quick_data, capsys,
                                                                               monkeypatch):
    flags = lambda name: quick_flags(tmp_path, quick_data, name) + ["--train-only", "--train-epochs", "3"]  # noqa: E731
    status, _, err = run_in_process(prune_example_resnet50, flags("straight.torch"), capsys)
    assert status == 0, err
    assert not (tmp_path / "results").exists()          # --train-only stops before pruning
    real_save = fcn_segmentation.FCNSegmentationModel.save

    def save_then_stop(self, path, epoch, **extra):
        real_save(self, path, epoch, **extra)
        if extra and epoch == 2:                         # the resume state after epoch 2
            raise KeyboardInterrupt
    monkeypatch.setattr(fcn_segmentation.FCNSegmentationModel, "save", save_then_stop)
    assert run_in_process(prune_example_resnet50, flags("resumed.torch"), capsys)[0] == 130
    monkeypatch.undo()
    # the best model so far exists, but its training is unfinished: pruning it needs --resume
    status, _, err = run_in_process(prune_example_resnet50, flags("resumed.torch"), capsys)
    assert status == 2 and "stopped before its last epoch" in err and "--resume" in err
    status, out, err = run_in_process(prune_example_resnet50, flags("resumed.torch") + ["--resume"], capsys)
    assert status == 0, err
    assert "after epoch 2 of 3" in out
    straight = torch.load(tmp_path / "straight.resume.torch", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.resume.torch", weights_only=True)
    assert straight["epoch"] == resumed["epoch"] == 3
    assert all(torch.equal(straight["state_dict"][k], resumed["state_dict"][k]) for k in straight["state_dict"])
    status, out, _ = run_in_process(prune_example_resnet50, flags("resumed.torch") + ["--resume"], capsys)
    assert status == 0 and "trained already" in out


def run_cli(args, cwd):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True)


def test_cli_from_the_examples_folder_rejects_a_model_of_another_depth(tmp_path):
    checkpoint = tmp_path / "d8.torch"
    msd.MSDSegmentationModel(1, 5, 8, 1, device="cpu").save(checkpoint, 0)
    result = run_cli(["prune_example_msd.py", "--model", checkpoint, "--depth", "10",
                      "--data", tmp_path / "no-data", "--out", tmp_path / "out", "--results", tmp_path / "res"],
                     EXAMPLES)
    assert result.returncode == 1
    assert result.stderr.startswith(f"prune_example_msd.py: {checkpoint}: checkpoint holds an MS-D network with "
                                    "c_in=1, num_labels=5, depth=8, width=1; this model expects c_in=1, "
                                    "num_labels=5, depth=10, width=1")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "res").exists()


def test_a_data_folder_without_images_is_reported_with_the_generator_command(tmp_path, capsys):
    checkpoint = tmp_path / "d8.torch"
    msd.MSDSegmentationModel(1, 5, 8, 1, device="cpu").save(checkpoint, 0)
    (tmp_path / "empty").mkdir()
    status, out, err = run_in_process(prune_example_msd, ["--model", checkpoint, "--depth", "8",
                                                          "--data", tmp_path / "empty", "--results", tmp_path / "res"],
                                      capsys)
    assert status == 1
    assert err.startswith(f"prune_example_msd.py: data folder {tmp_path / 'empty'} holds no CS train images")
    assert f"generate_example_data.py --out {tmp_path / 'empty'}" in err
    assert len(err.strip().splitlines()) == 1


def test_plot_entry_rejects_a_file_of_another_layout(tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text("method,step\nLEAN,1\n")
    assert plot_results.main([str(other)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (f"plot_results.py: {other}: not a pruning results file (missing columns "
                           "['target_kept', 'kept_fraction', 'test_accuracy', 'train_loss', 'seconds', 'model_file'])")


def test_training_continues_from_a_checkpoint_with_its_weights_and_epoch(tmp_path, quick_data, capsys):
    from pruning_toolkit.experiments import msd_training as train_example_msd
    first, second = tmp_path / "first.torch", tmp_path / "second.torch"
    common = ["--data", quick_data, "--depth", "4", "--dilations", "1-2", "--epochs", "1",
              "--threads", "1", "--quiet", "--train-images", "5", "--val-images", "5"]
    train_example_msd.main([str(a) for a in common + ["--out", first]])
    capsys.readouterr()
    train_example_msd.main([str(a) for a in common + ["--out", second, "--init", first]])
    out = capsys.readouterr().out
    reloaded = msd.MSDSegmentationModel(1, 5, 4, 1, dilations=[1, 2], device="cpu")
    assert reloaded.load(first) == 1
    val_set = train_example_msd.cs_dataset(quick_data, "val", 5)
    val_loss = reloaded.validate(torch.utils.data.DataLoader(val_set, batch_size=5))
    assert f"after epoch 1 (validation loss {val_loss:.5f})" in out
    assert "epoch 2: validation loss" in out


# ---------------------------------------------------------------- results folders are never lost
@pytest.fixture(scope="module")
def small_msd(quick_data, tmp_path_factory):
    """An MS-D of depth 4 trained one epoch on 5 quick images (a start model for full-mode runs)."""
    from pruning_toolkit.experiments import msd_training as train_example_msd
    path = tmp_path_factory.mktemp("model") / "msd_d4.torch"
    train_example_msd.main([str(a) for a in ["--data", quick_data, "--out", path, "--depth", "4", "--epochs", "1",
                                             "--train-images", "5", "--val-images", "5", "--threads", "1", "--quiet"]])
    return path


def full_mode_flags(tmp_path, data, model, method="lean"):
    return ["--data", data, "--model", model, "--depth", "4", "--method", method, "--steps", "2", "--epochs", "1",
            "--train-images", "5", "--test-images", "5", "--threads", "1", "--quiet",
            "--out", tmp_path / "pruned", "--results", tmp_path / "results"]


def test_a_second_run_over_a_results_folder_is_refused_and_changes_nothing(tmp_path, quick_data, small_msd, capsys):
    flags = full_mode_flags(tmp_path, quick_data, small_msd)
    assert run_in_process(prune_example_msd, flags, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "results").iterdir() if p.is_file()}
    status, out, err = run_in_process(prune_example_msd, flags, capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "already holds results" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "results").iterdir() if p.is_file()} == before


def test_overwrite_starts_the_given_method_over_and_keeps_the_others(tmp_path, quick_data, small_msd, capsys):
    assert run_in_process(prune_example_msd, full_mode_flags(tmp_path, quick_data, small_msd, "all"), capsys)[0] == 0
    rows = read_rows(tmp_path / "results" / "results.csv")
    status, _, err = run_in_process(prune_example_msd, full_mode_flags(tmp_path, quick_data, small_msd, "indivL1")
                                    + ["--overwrite"], capsys)
    assert status == 0, err
    again = read_rows(tmp_path / "results" / "results.csv")
    others = lambda table: [r for r in table if r["method"] != "indivL1"]  # noqa: E731
    assert others(again) == others(rows)
    assert [r["step"] for r in again if r["method"] == "indivL1"] == ["0", "1", "2"]
    record = json.loads((tmp_path / "results" / "run.json").read_text())   # still records every method
    assert record["methods"] == ["LEAN", "indivL1", "indivSV"] and len(record["resumed"]) == 1


def test_resume_drops_a_torn_last_row_and_says_what_it_found(tmp_path, quick_data, small_msd, capsys):
    flags = full_mode_flags(tmp_path, quick_data, small_msd)
    assert run_in_process(prune_example_msd, flags, capsys)[0] == 0
    csv_path = tmp_path / "results" / "results.csv"
    complete = read_rows(csv_path)
    text = csv_path.read_text()
    last_line = text.splitlines()[-1]
    csv_path.write_text(text[:-len(last_line) - 1] + last_line[:len(last_line) // 2])   # a torn final row
    status, out, err = run_in_process(prune_example_msd, flags + ["--resume"], capsys)
    assert status == 0, err
    assert "dropped a torn last row" in out and "resuming" in out and "LEAN steps 0-1" in out
    resumed = read_rows(csv_path)
    assert [r["step"] for r in resumed] == [r["step"] for r in complete]
    assert resumed[-1]["model_file"] == complete[-1]["model_file"]


def test_two_runs_on_one_results_folder_do_not_interleave(tmp_path, quick_data, small_msd, capsys):
    with pruning_experiment.FolderLock(tmp_path / "results"):
        status, _, err = run_in_process(prune_example_msd, full_mode_flags(tmp_path, quick_data, small_msd), capsys)
    assert status == 2 and "another run is writing to" in err
    assert not (tmp_path / "results" / "results.csv").exists()


def test_resume_and_overwrite_together_are_refused(tmp_path, quick_data, small_msd, capsys):
    status, _, err = run_in_process(prune_example_msd, full_mode_flags(tmp_path, quick_data, small_msd)
                                    + ["--resume", "--overwrite"], capsys)
    assert status == 2 and "give one of them" in err


def test_run_json_records_how_the_results_were_made(tmp_path, quick_data, small_msd, capsys):
    import json
    assert run_in_process(prune_example_msd, full_mode_flags(tmp_path, quick_data, small_msd), capsys)[0] == 0
    record = json.loads((tmp_path / "results" / "run.json").read_text())
    assert record["command"].startswith("python examples/prune_example_msd.py --data ")
    assert {k: record[k] for k in ("train_images", "test_images", "epochs", "steps", "ratio", "methods",
                                   "device", "threads")} == dict(train_images=5, test_images=5, epochs=1, steps=2,
                                                                 ratio=0.05, methods=["LEAN"], device="cpu", threads=1)
    assert record["model"] == str(small_msd) and record["seconds"] > 0
    rows = read_rows(tmp_path / "results" / "results.csv")
    assert rows[0]["model_file"] == str(small_msd)       # outside the repository: as given
    status, _, err = run_in_process(prune_example_msd, full_mode_flags(tmp_path, quick_data, small_msd)
                                    + ["--resume", "--epochs", "2"], capsys)
    assert status == 2 and "records epochs=1" in err


def test_a_start_model_no_better_than_the_majority_class_is_warned_about(tmp_path, quick_data, capsys):
    untrained = msd.MSDSegmentationModel(1, 5, 4, 1, device="cpu")   # final layer zero: constant output
    untrained.save(tmp_path / "untrained.torch", 0)
    status, _, err = run_in_process(prune_example_msd, full_mode_flags(tmp_path, quick_data, tmp_path / "untrained.torch")
                                    + ["--steps", "1"], capsys)
    assert status == 0
    assert "no better than predicting the most frequent class" in err


def test_output_folders_that_cannot_be_written_are_refused_before_any_work(tmp_path, quick_data, small_msd, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for flag in ("--out", "--results"):
        flags = full_mode_flags(tmp_path, quick_data, small_msd) + [flag, blocker / "sub"]
        status, out, err = run_in_process(prune_example_msd, flags, capsys)
        assert status == 1 and f"{flag} {blocker / 'sub'}: cannot write there" in err
        assert "start model" not in out
    assert not (tmp_path / "results").exists()


def test_an_interrupted_quick_data_generation_leaves_no_partial_set(tmp_path, monkeypatch):
    calls = []

    def killed(out, counts, size, seed, progress):
        (Path(out) / "train" / "noisy").mkdir(parents=True)
        (Path(out) / "train" / "noisy" / "00000.tiff").write_bytes(b"x")
        calls.append(out)
        raise KeyboardInterrupt
    monkeypatch.setattr(generate_example_data, "generate_example_data", killed)
    with pytest.raises(KeyboardInterrupt):
        pruning_experiment.ensure_quick_data(tmp_path / "data", 64, 0, True)
    assert not (tmp_path / "data").exists() and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    pruning_experiment.ensure_quick_data(tmp_path / "data", 64, 0, True)
    assert pruning_experiment.has_cs_images(tmp_path / "data")
    assert len(list((tmp_path / "data" / "test" / "noisy").glob("*.tiff"))) == pruning_experiment.QUICK_DATA["counts"]["test"]


def test_redrawing_a_results_plot_gives_the_same_bytes_and_the_recorded_title(tmp_path):
    import json
    import shutil
    shutil.copy(ROOT / "examples" / "results" / "results.csv", tmp_path / "results.csv")
    (tmp_path / "run.json").write_text(json.dumps({"title": "start X\nsettings Y"}))
    assert plot_results.main([str(tmp_path / "results.csv")]) == 0
    first = {name: (tmp_path / name).read_bytes() for name in ("accuracy_vs_kept.svg", "accuracy_vs_kept.png")}
    assert plot_results.main([str(tmp_path / "results.csv")]) == 0
    assert first == {name: (tmp_path / name).read_bytes() for name in first}
    assert b"settings Y" in first["accuracy_vs_kept.svg"]


@pytest.mark.parametrize("granularity", ["kernel", "filter"])
def test_criteria_run_beside_lean_from_the_same_start_and_are_recorded(tmp_path, quick_data, small_msd,
                                                                       granularity, capsys):
    flags = full_mode_flags(tmp_path, quick_data, small_msd, "lean,lrp,taylor") + [
        "--granularity", granularity, "--reference-images", "3"]
    status, _, err = run_in_process(prune_example_msd, flags, capsys)
    assert status == 0, err
    rows = read_rows(tmp_path / "results" / "results.csv")
    assert [(r["method"], r["step"]) for r in rows] == [(m, s) for m in ("LEAN", "LRP", "Taylor") for s in "012"]
    assert len({r["test_accuracy"] for r in rows if r["step"] == "0"}) == 1
    for row in rows:
        if row["method"] != "LEAN" and row["step"] != "0":      # the criteria keep at most the target
            assert float(row["kept_fraction"]) <= float(row["target_kept"]) + 1e-9
    record = json.loads((tmp_path / "results" / "run.json").read_text())
    assert (record["reference_images"], record["granularity"], record["methods"]) == (3, granularity,
                                                                                     ["LEAN", "LRP", "Taylor"])
    status, _, err = run_in_process(prune_example_msd, flags[:-1] + ["5", "--resume"], capsys)
    assert status == 2 and "reference_images=3" in err and len(err.strip().splitlines()) == 1


def test_the_lrp_rule_flag_reaches_the_criterion_and_is_recorded(tmp_path, quick_data, small_msd, capsys):
    import pruning_algorithms as lean
    from torch.utils.data import DataLoader
    from pruning_toolkit.masks import copy_model
    flags = full_mode_flags(tmp_path, quick_data, small_msd, "lrp") + [
        "--reference-images", "3", "--steps", "1", "--epochs", "0", "--ratio", "0.5", "--lrp-rule", "epsilon"]
    status, _, err = run_in_process(prune_example_msd, flags, capsys)
    assert status == 0, err
    rows = read_rows(tmp_path / "results" / "results.csv")
    pruned = msd.MSDSegmentationModel(1, 5, 4, 1, device="cpu")
    pruned.load(tmp_path / "pruned" / rows[1]["model_file"])
    expected = msd.MSDSegmentationModel(1, 5, 4, 1, device="cpu")
    expected.load(small_msd)
    reference = list(DataLoader(pruning_experiment.cs_split(quick_data, "train", 3), batch_size=5))
    masks = lambda model: {k: v for k, v in model.msd.state_dict().items() if k.endswith("_mask")}  # noqa: E731
    same = lambda a, b: a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    zplus = copy_model(expected)
    lean.LRP_Global_MSD_3x3(expected, 0.5, reference, rule="epsilon")
    lean.LRP_Global_MSD_3x3(zplus, 0.5, reference, rule="zplus")
    assert same(masks(pruned), masks(expected)) and not same(masks(pruned), masks(zplus))
    assert json.loads((tmp_path / "results" / "run.json").read_text())["lrp_rule"] == "epsilon"
    status, _, err = run_in_process(prune_example_msd, flags[:-1] + ["zplus", "--resume"], capsys)
    assert status == 2 and "lrp_rule='epsilon'" in err


def test_an_unknown_method_in_a_list_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:           # argparse's own exit
        prune_example_msd.main(["--method", "lean,relevance"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "unknown method 'relevance'" in err and len(err.strip().splitlines()) == 1


def test_the_few_samples_scenario_prunes_copies_one_shot_and_resumes(tmp_path, quick_data, small_msd, capsys):
    from pruning_toolkit.experiments import few_samples
    flags = ["--model", small_msd, "--depth", "4", "--data", quick_data, "--criteria", "lrp,lean",
             "--samples", "1,2", "--seeds", "0,1", "--kept", "0.5,0.2", "--test-images", "5", "--threads", "1",
             "--results", tmp_path / "few"]
    status = few_samples.report_errors([str(a) for a in flags])
    assert status == 0, capsys.readouterr().err
    rows = read_rows(tmp_path / "few" / "results.csv")
    assert sorted((r["criterion"], r["samples"], r["seed"], r["target_kept"]) for r in rows) == sorted(
        [("lrp", n, s, k) for n in "12" for s in "01" for k in ("0.500000", "0.200000")]
        + [("lean", "0", "0", k) for k in ("0.500000", "0.200000")])
    assert all(float(r["kept_fraction"]) <= float(r["target_kept"]) + 1e-9 for r in rows if r["criterion"] == "lrp")
    record = json.loads((tmp_path / "few" / "run.json").read_text())
    assert record["test_images"] == 5 and record["samples"] == [1, 2]
    assert "| lrp |" in (tmp_path / "few" / "results.md").read_text()
    assert (tmp_path / "few" / "accuracy_vs_samples.svg").is_file()
    before = (tmp_path / "few" / "results.csv").read_bytes()
    assert few_samples.report_errors([str(a) for a in flags]) == 2          # no silent overwrite
    assert few_samples.report_errors([str(a) for a in flags + ["--resume"]]) == 0
    assert (tmp_path / "few" / "results.csv").read_bytes() == before        # nothing left to run
    # a resumed run adds rows and says so in run.json: settings merged, seconds summed
    assert few_samples.report_errors([str(a) for a in flags + ["--resume", "--seeds", "2"]]) == 0
    resumed = json.loads((tmp_path / "few" / "run.json").read_text())
    assert resumed["seeds"] == [0, 1, 2] and resumed["command"] == record["command"]
    assert len(resumed["resumed"]) == 2 and resumed["seconds"] > record["seconds"]
    assert len(read_rows(tmp_path / "few" / "results.csv")) == len(rows) + 4
    before = (tmp_path / "few" / "results.csv").read_bytes()
    status = few_samples.report_errors([str(a) for a in flags + ["--resume", "--granularity", "filter"]])
    assert status == 2 and "records granularity='kernel'" in capsys.readouterr().err
    assert (tmp_path / "few" / "results.csv").read_bytes() == before


def test_few_samples_results_written_before_the_macs_column_resume_in_their_own_layout(tmp_path, quick_data,
                                                                                      small_msd, capsys):
    from pruning_toolkit.experiments import few_samples
    flags = [str(a) for a in ["--model", small_msd, "--depth", "4", "--data", quick_data, "--criteria", "lean",
                              "--kept", "0.5", "--test-images", "5", "--threads", "1", "--results", tmp_path / "few"]]
    assert few_samples.report_errors(flags) == 0, capsys.readouterr().err
    path = tmp_path / "few" / "results.csv"
    rows = read_rows(path)
    assert rows[0]["conv_macs_kept"] == ""                          # kernel granularity: the masked network
    old_layout = few_samples.FIELDS[:-1]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, old_layout, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert few_samples.report_errors(flags + ["--resume", "--kept", "0.2"]) == 0, capsys.readouterr().err
    assert path.read_text().splitlines()[0] == ",".join(old_layout)
    assert [r["target_kept"] for r in read_rows(path)] == ["0.500000", "0.200000"]


def test_the_few_samples_scenario_runs_on_a_narrow_fcn_resnet50(tmp_path, quick_data, capsys):
    from pruning_toolkit.experiments import few_samples
    model = tmp_path / "fcn.torch"
    status, _, err = run_in_process(prune_example_resnet50, quick_flags(tmp_path, quick_data, "fcn.torch")
                                    + ["--train-only", "--train-epochs", "1"], capsys)
    assert status == 0, err
    flags = ["--model", model, "--architecture", "resnet50", "--narrow", "--data", quick_data,
             "--criteria", "taylor,indivSV", "--samples", "2", "--seeds", "0", "--kept", "0.5",
             "--granularity", "filter", "--test-images", "5", "--threads", "1", "--results", tmp_path / "few"]
    assert few_samples.report_errors([str(a) for a in flags]) == 0, capsys.readouterr().err
    rows = {r["criterion"]: r for r in read_rows(tmp_path / "few" / "results.csv")}
    assert set(rows) == {"taylor", "indivSV"} and rows["taylor"]["granularity"] == "filter"
    for row in rows.values():
        assert 0.3 < float(row["kept_fraction"]) <= 0.5 + 1e-9 and 0 <= float(row["test_accuracy"]) <= 1
    record = json.loads((tmp_path / "few" / "run.json").read_text())
    assert (record["architecture"], record["evaluated"]) == ("resnet50", "shrunk")
    # the accuracy in the CSV is the masked network's, measured on the network shrunk for real
    from pruning_toolkit.masks import copy_model
    from pruning_toolkit.shrinking import count_parameters
    from torch.utils.data import DataLoader
    architecture = few_samples.Architecture(few_samples.parse_args([str(a) for a in flags]))
    architecture.setup.test_loader = DataLoader(pruning_experiment.cs_split(quick_data, "test", 5), batch_size=5)
    masked = copy_model(architecture.model)
    few_samples.pruning(architecture, "taylor", pruning_experiment.cs_split(quick_data, "train"), 2, 0)(masked, 0.5)
    evaluated, _ = architecture.evaluated(masked)
    assert count_parameters(evaluated) < 0.8 * count_parameters(masked.net)
    for network in (masked, evaluated):
        assert architecture.setup.accuracy(network) == pytest.approx(float(rows["taylor"]["test_accuracy"]), abs=1e-6)
    image = torch.zeros(1, 1, 64, 64)
    macs_kept = conv_macs_by_hooks(evaluated, image) / conv_macs_by_hooks(architecture.model.net, image)
    assert float(rows["taylor"]["conv_macs_kept"]) == pytest.approx(macs_kept, abs=1e-6) and macs_kept < 0.8
    assert "Convolution MACs of the shrunk networks" in (tmp_path / "few" / "results.md").read_text()


def test_seeds_repeat_each_method_and_the_table_shows_mean_and_spread(tmp_path, quick_data, small_msd, capsys):
    flags = full_mode_flags(tmp_path, quick_data, small_msd, "lean,indivL1") + ["--seeds", "0-1"]
    status, _, err = run_in_process(prune_example_msd, flags, capsys)
    assert status == 0, err
    rows = read_rows(tmp_path / "results" / "results.csv")
    assert sorted({(r["method"], r["seed"]) for r in rows}) == [("LEAN", "0"), ("LEAN", "1"), ("indivL1", "0"),
                                                               ("indivL1", "1")]
    assert all(r["model_file"].startswith(f"seed-{r['seed']}/") for r in rows if r["step"] != "0")
    assert all((tmp_path / "pruned" / r["model_file"]).is_file() for r in rows if r["step"] != "0")
    assert "(2 seeds)" in (tmp_path / "results" / "results.md").read_text()
    status, out, _ = run_in_process(prune_example_msd, flags + ["--resume"], capsys)
    assert status == 0 and "LEAN seed 1: all 2 steps already" in out


def test_a_results_file_without_the_seed_column_resumes_in_its_own_layout(tmp_path, quick_data, small_msd, capsys):
    flags = full_mode_flags(tmp_path, quick_data, small_msd)
    assert run_in_process(prune_example_msd, flags, capsys)[0] == 0
    path = tmp_path / "results" / "results.csv"
    rows = read_rows(path)
    (tmp_path / "pruned" / rows[-1]["model_file"]).unlink()
    with open(path, "w", newline="") as handle:          # as written before results had seeds
        writer = csv.DictWriter(handle, plot_results.RESULT_FIELDS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows[:-1])
    status, _, err = run_in_process(prune_example_msd, flags + ["--resume"], capsys)
    assert status == 0, err
    assert path.read_text().splitlines()[0] == ",".join(plot_results.RESULT_FIELDS)
    assert [r["step"] for r in read_rows(path)] == ["0", "1", "2"]


def test_two_seeds_and_two_methods_as_local_jobs_give_one_csv_with_four_runs(tmp_path, quick_data, small_msd, capsys):
    flags = full_mode_flags(tmp_path, quick_data, small_msd, "lean,indivL1") + ["--seeds", "0,1", "--launcher",
                                                                               "local"]
    status, out, err = run_in_process(prune_example_msd, flags, capsys)
    assert status == 0, err
    assert "jobs: 4 done, 0 running, 0 failed (of 4)" in err
    rows = read_rows(tmp_path / "results" / "results.csv")
    assert sorted({(r["method"], r["seed"]) for r in rows}) == [("LEAN", "0"), ("LEAN", "1"), ("indivL1", "0"),
                                                               ("indivL1", "1")]
    assert len(rows) == 4 * 3
    record = json.loads((tmp_path / "results" / "run.json").read_text())
    assert (record["seeds"], record["jobs"], record["launcher"]) == ([0, 1], 4, "local")
    in_process = tmp_path / "alone"
    status, _, err = run_in_process(prune_example_msd, full_mode_flags(in_process, quick_data, small_msd, "lean")
                                    + ["--seeds", "1"], capsys)
    assert status == 0, err
    ignore_time = lambda row: {k: v for k, v in row.items() if k != "seconds"}  # noqa: E731
    assert [ignore_time(r) for r in read_rows(in_process / "results" / "results.csv")] == \
        [ignore_time(r) for r in rows if r["method"] == "LEAN" and r["seed"] == "1"]
    status, _, err = run_in_process(prune_example_msd, flags, capsys)          # all there: nothing submitted
    assert status == 0 and "submitted" not in err
