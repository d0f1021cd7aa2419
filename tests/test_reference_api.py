"""The reference's public names take the reference's arguments and return what it returns, and a
reference-style script runs with only ``import msd_pytorch as mp`` changed to ``import msd as mp``."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fcn_resnet
import msd
import pruning_algorithms as lean
import pruning_utils
from lean_helpers import NARROW, random_msd

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_get_default_mask_takes_module_and_name():
    conv = torch.nn.Conv2d(3, 4, 3)
    mask = pruning_utils.get_default_mask(conv, "weight")
    assert mask.shape == conv.weight.shape and bool(mask.eq(1).all())


@pytest.mark.parametrize("name", ["fraction_pruned_convs_MSD", "fraction_pruned_convs_MSD3x3",
                                  "fraction_pruned_convs_MSD_3x3"])
def test_msd_fractions_are_pruned_total_fraction(name):
    model = random_msd(0, c_in=1, c_out=2, depth=6)
    lean.IndivL1_Global_MSD_3x3(model, 0.5)
    pruned, total, fraction = getattr(pruning_utils, name)(model)
    # counted by hand from the masks: a convolution is pruned when its whole kernel is masked
    block = model.msd.msd_block
    counted = sum(int((~pruning_utils.get_mask(block, f"weight{k}").reshape(1, 1 + k, 9).any(2)).sum()) for k in range(6))
    expected_total = sum(1 + k for k in range(6)) + (0 if "3x3" in name else 2 * 7)
    assert (pruned, total) == (counted, expected_total) and fraction == pytest.approx(counted / expected_total)


def test_resnet50_helpers_return_reference_pairs_and_counts():
    model = fcn_resnet.fcn_resnet50(3, 1, **NARROW)
    convs = pruning_utils.get_convs_ResNet50(model)
    assert all(isinstance(module, torch.nn.Conv2d) and name == "weight" for module, name in convs)
    lean.IndivL1_Global_ResNet50(model, 0.6)
    pruned, total, fraction = pruning_utils.fraction_pruned_convs_ResNet50(model)
    assert total == sum(m.weight.shape[0] * m.weight.shape[1] for m, _ in convs)
    assert pruned == sum(int((~pruning_utils.get_mask(m, n).flatten(2).any(2)).sum()) for m, n in convs)
    assert fraction == pytest.approx(pruned / total) and pruning_utils.pruned_before_ResNet50(model)


def test_get_global_accuracy_is_importable_where_the_reference_scripts_import_it():
    sys.path.insert(0, str(ROOT / "examples"))
    from train_example_msd import get_global_accuracy
    assert get_global_accuracy is msd.get_global_accuracy is pruning_utils.get_global_accuracy


@pytest.mark.parametrize("bad", [True, "0.5", None, 0, 1.5, float("nan")])
def test_methods_refuse_a_keep_fraction_that_is_not_one(bad):
    with pytest.raises(ValueError, match="tot_perc"):
        lean.LEAN_SV_MSD_3x3(random_msd(1, depth=4), bad)


def test_fourier_norms_refuse_a_boolean_size():
    with pytest.raises(ValueError, match="mock image size"):
        pruning_utils.compute_FourierSVD_norms(torch.randn(2, 2, 3, 3), True, "max")


def test_individual_methods_on_all_zero_weights_say_so():
    model = random_msd(2, depth=4)
    with torch.no_grad():
        for k in range(4):
            getattr(model.msd.msd_block, f"weight{k}").zero_()
    with pytest.raises(ValueError, match="norm 0"):
        lean.IndivSV_Global_MSD_3x3(model, 0.5)


def test_nan_weights_are_refused_by_the_methods():
    model = random_msd(3, depth=4)
    with torch.no_grad():
        model.msd.msd_block.weight2[0, 0, 1, 1] = float("nan")
    for method in (lean.LEAN_SV_MSD_3x3, lean.IndivL1_Global_MSD_3x3):
        with pytest.raises(ValueError, match="NaN"):
            method(model, 0.5)


REFERENCE_STYLE_SCRIPT = """
import numpy as np
import torch
from torch.utils.data import DataLoader

import msd as mp                       # the reference: import msd_pytorch as mp
import pruning_algorithms as lean
import pruning_utils as utils
from train_example_msd import get_global_accuracy

torch.manual_seed(0)
c_in, num_labels, depth, width, dilations = 1, 5, 6, 1, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
train_ds = mp.ImageDataset("{data}/train/noisy/*.tiff", "{data}/train/label/*.tiff", labels=[0, 1, 2, 3, 4])
test_ds = mp.ImageDataset("{data}/test/noisy/*.tiff", "{data}/test/label/*.tiff", labels=[0, 1, 2, 3, 4])
train_dl = DataLoader(train_ds, 5, shuffle=True)
test_dl = DataLoader(test_ds, 5, shuffle=False)
model = mp.MSDSegmentationModel(c_in, num_labels, depth, width, dilations=dilations)
model.set_normalization(train_dl)
model.train(train_dl, 1)
model.save("{out}/start.torch", 1)
model.load("{out}/start.torch")
ratio, nsteps = 0.2, 3
perc = np.exp(np.log(ratio) / nsteps)
for step in range(1, nsteps + 1):
    model = lean.LEAN_SV_MSD_3x3(model, perc ** step, Redun=True, verbose=False)
    model.train(train_dl, 1)
    pruned, total, fraction = utils.fraction_pruned_convs_MSD3x3(model)
    accuracy = get_global_accuracy(model, test_dl)
    model.save("{out}/msd_network_LEAN_d=%d_ratio=%.4f_acc=%.4f.torch" % (depth, 1 - fraction, accuracy), step)
    print("step", step, pruned, total, "%.4f" % (1 - fraction), "%.4f" % accuracy)
"""


def test_a_reference_style_script_runs_with_only_the_import_changed(tmp_path):
    from pruning_toolkit.experiments import cs_data as generate_example_data
    data = tmp_path / "data"
    generate_example_data.generate_example_data(data, {"train": 5, "val": 1, "test": 2}, 32)
    script = tmp_path / "prune_reference_style.py"
    script.write_text(textwrap.dedent(REFERENCE_STYLE_SCRIPT.format(data=data, out=tmp_path)))
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'examples'}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    steps = [line.split() for line in done.stdout.splitlines() if line.startswith("step")]
    assert [int(s[1]) for s in steps] == [1, 2, 3]
    kept = [float(s[4]) for s in steps]
    assert kept == sorted(kept, reverse=True) and kept[-1] == pytest.approx(0.2, abs=1 / 21 + 1e-3)  # 21 convolutions
    for _, _, _, _, kept_text, accuracy_text in steps:   # each step saved under the reference's name
        assert (tmp_path / f"msd_network_LEAN_d=6_ratio={float(kept_text):.4f}_acc={float(accuracy_text):.4f}.torch").is_file()


def test_verbose_lean_says_how_many_convolutions_can_start_a_chain(capsys):
    model = random_msd(5, depth=6)
    norms = [pruning_utils.compute_FourierSVD_norms(getattr(model.msd.msd_block, f"weight{k}"), 64, "max")
             for k in range(6)]
    lean.LEAN_SV_MSD_3x3(model, 0.5, verbose=True)
    out = capsys.readouterr().out
    expected = sum(int((n >= 1).sum()) for n in norms)
    assert f"LEAN: {expected} of {sum(n.numel() for n in norms)} remaining convolutions have a spectral norm >= 1" in out
    assert "LEAN_SV_MSD_3x3: pruned" in out
