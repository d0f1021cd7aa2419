"""Circle-Square data (examples/generate_example_data.py): bit-identical to the spec's
procedure, the shapes and labels it promises, the files and the CLI."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import msd
from pruning_toolkit.experiments import cs_data as gen

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "generate_example_data.py"


def spec_reference(counts, n=256, seed=12345):
    """The spec's procedure written out literally, on numpy's global random state."""
    s = n // 8
    T0 = np.ones((s, s))
    T1 = T0.copy()
    T1[s // 4:-s // 4, s // 4:-s // 4] = 0
    xx, yy = np.mgrid[-1:1:s * 1j, -1:1:s * 1j]
    T2 = xx ** 2 + yy ** 2 < 1
    T3 = T2.copy()
    T3[xx ** 2 + yy ** 2 < 0.25] = 0
    T = [T0, T1, T2, T3]
    np.random.seed(seed)
    images = []
    for split in ("train", "val", "test"):
        for _ in range(counts[split]):
            im = np.zeros((n, n), dtype=np.float32)
            lab = np.zeros((n, n), dtype=np.uint8)
            tp = 0
            for _ in range(24):
                while True:
                    x, y = (np.random.random(2) * (n - s)).astype(int)
                    if lab[x:x + s, y:y + s].max() == 0:
                        break
                v = np.random.random() * 0.8 + 0.2
                im[x:x + s, y:y + s] = T[tp] * v
                lab[x:x + s, y:y + s] = T[2 * (tp // 2)] * (tp + 1)
                tp = (tp + 1) % 4
            noisy = im + np.random.normal(size=im.shape)
            images.append((split, noisy.astype(np.float32), im, lab))
    return images


def test_generator_is_bit_identical_to_the_spec_procedure():
    counts = {"train": 3, "val": 2, "test": 2}
    ours = list(gen.generate_cs_images(counts))
    reference = spec_reference(counts)
    assert [o[0] for o in ours] == [r[0] for r in reference]
    assert [o[1] for o in ours] == [0, 1, 2, 0, 1, 0, 1]
    for (_, _, noisy, noiseless, label), (_, ref_noisy, ref_im, ref_lab) in zip(ours, reference):
        assert noisy.dtype == np.float32 and noiseless.dtype == np.float32
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(noisy, ref_noisy)
        np.testing.assert_array_equal(noiseless, ref_im)
        np.testing.assert_array_equal(label, ref_lab)


def test_other_sizes_and_seeds_follow_the_same_procedure():
    counts = {"train": 1, "val": 1, "test": 0}
    ours = list(gen.generate_cs_images(counts, size=72, seed=7))
    reference = spec_reference(counts, n=72, seed=7)
    for (_, _, noisy, noiseless, label), (_, ref_noisy, ref_im, ref_lab) in zip(ours, reference):
        np.testing.assert_array_equal(noisy, ref_noisy)
        np.testing.assert_array_equal(noiseless, ref_im)
        np.testing.assert_array_equal(label, ref_lab)


def test_each_image_holds_six_shapes_of_each_kind():
    side = 32
    square_area = side * side
    disc_area = int(gen.cs_templates(side)[2].sum())
    for _, _, noisy, noiseless, label in gen.generate_cs_images({"train": 4}):
        counts = np.bincount(label.ravel(), minlength=5)
        assert counts.tolist()[1:] == [6 * square_area, 6 * square_area, 6 * disc_area,
                                       6 * disc_area]
        assert np.all(noiseless[label == 0] == 0)
        bright = noiseless[noiseless > 0]
        assert bright.min() >= 0.2 and bright.max() < 1.0
        # hollow squares and rings: labelled pixels with no intensity
        assert np.any((label == 2) & (noiseless == 0)) and np.any((label == 4) & (noiseless == 0))
        assert np.all(noiseless[(label == 1) | (label == 3)] > 0)
        noise = noisy.astype(np.float64) - noiseless
        assert abs(noise.mean()) < 0.02 and abs(noise.std() - 1) < 0.02


def test_impossible_placement_raises_instead_of_looping(monkeypatch):
    # every shape labels >= 4 of the 1024 pixels, disjointly: 400 shapes cannot fit
    monkeypatch.setattr(gen, "MAX_PLACEMENT_TRIES", 200)
    monkeypatch.setattr(gen, "SHAPES_PER_IMAGE", 400)
    with pytest.raises(ValueError, match="cannot place 400 shapes"):
        gen.make_cs_image(np.random.RandomState(0), size=32)


def test_cli_writes_the_reference_layout(tmp_path):
    out = tmp_path / "data"
    assert gen.main(["--out", str(out), "--train", "2", "--val", "1", "--test", "1",
                     "--size", "64", "--seed", "3", "--quiet"]) == 0
    for split, count in (("train", 2), ("val", 1), ("test", 1)):
        for kind in ("noisy", "noiseless", "label"):
            names = sorted(p.name for p in (out / split / kind).iterdir())
            assert names == [f"{i:05d}.tiff" for i in range(count)]
    expected = list(gen.generate_cs_images({"train": 2, "val": 1, "test": 1}, 64, 3))
    split, index, noisy, noiseless, label = expected[3]
    assert (split, index) == ("test", 0)
    stored = tifffile.imread(out / "test" / "noisy" / "00000.tiff")
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, noisy)
    np.testing.assert_array_equal(tifffile.imread(out / "test" / "noiseless" / "00000.tiff"),
                                  noiseless)
    stored_label = tifffile.imread(out / "test" / "label" / "00000.tiff")
    assert stored_label.dtype == np.uint8
    np.testing.assert_array_equal(stored_label, label)
    dataset = msd.ImageDataset(str(out / "train" / "noisy" / "*.tiff"),
                               str(out / "train" / "label" / "*.tiff"), labels=[0, 1, 2, 3, 4])
    image, target = dataset[1]
    assert image.shape == (1, 64, 64) and target.shape == (1, 64, 64)
    np.testing.assert_array_equal(target[0].numpy(), expected[1][4])


def test_defaults_are_the_reference_values():
    args = gen.parse_args([])
    assert args.out == SCRIPT.parent / "data"
    assert (args.train, args.val, args.test, args.size, args.seed) == (500, 100, 50, 256, 12345)


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def failing_imwrite(path, array):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(gen.tifffile, "imwrite", failing_imwrite)
    with pytest.raises(OSError):
        gen.generate_example_data(tmp_path, {"train": 1, "val": 0, "test": 0}, size=32)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("flags,message", [
    (["--train", "-1"], "--train must be >= 0"),
    (["--size", "8"], "--size must lie in [32, 8192]"),
    (["--seed", "-4"], "--seed must be in"),
])
def test_cli_rejects_bad_flags_with_one_line(flags, message):
    result = subprocess.run([sys.executable, str(SCRIPT), *flags], capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_reports_unwritable_output_without_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(blocker / "data"),
                             "--train", "1", "--val", "0", "--test", "0", "--size", "32",
                             "--quiet"], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("generate_example_data.py: ")
    assert len(result.stderr.strip().splitlines()) == 1
