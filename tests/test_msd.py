"""MS-D network (msd.py): forward/backward against an explicit per-layer reference, pruning
masks, msd_pytorch's checkpoint layout, save/load, the real msd_pytorch checkpoint, data."""
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

import msd
from pruning_toolkit import msd_network

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_NAME = "msd_pytorch_checkpoint_cs_d50.torch"


def reference_checkpoint():
    """The real msd_pytorch checkpoint in ../shared/reference or ./shared/reference (also
    two levels up, for git worktrees at <root>/wt/<name>); None when absent."""
    for base in (ROOT.parent, ROOT, ROOT.parent.parent):
        path = base / "shared" / "reference" / CHECKPOINT_NAME
        if path.is_file():
            return path
    return None


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny matrix products thrash when MKL/OpenMP threads compete on a busy machine;
    these tests check results, not parallel speed, so run them on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ slow reference
def reference_forward_numpy(module, x):
    """Explicit MS-D forward: numpy 'symmetric' padding, one F.conv2d per layer."""
    block = module.msd_block
    channels = x.detach().double().numpy()
    for k, dilation in enumerate(block.dilations):
        padded = np.pad(channels, ((0, 0), (0, 0), (dilation, dilation), (dilation, dilation)),
                        mode="symmetric")
        weight = getattr(block, f"weight{k}").detach().double()
        bias = block.bias.detach().double()[k * block.width:(k + 1) * block.width]
        layer = F.conv2d(torch.from_numpy(padded), weight, bias, dilation=dilation).relu()
        channels = np.concatenate([channels, layer.numpy()], axis=1)
    final = module.final_layer.linear
    out = np.einsum("oc,bchw->bohw", final.weight.detach().double()[:, :, 0].numpy(), channels)
    return out + final.bias.detach().double().numpy()[None, :, None, None]


def reference_forward_torch(module, x):
    """The same computation, differentiable (padding by numpy-built gather indices)."""
    block = module.msd_block
    channels = x
    for k, dilation in enumerate(block.dilations):
        rows = torch.from_numpy(np.pad(np.arange(x.shape[2]), dilation, mode="symmetric"))
        cols = torch.from_numpy(np.pad(np.arange(x.shape[3]), dilation, mode="symmetric"))
        padded = channels[:, :, rows][:, :, :, cols]
        bias = block.bias[k * block.width:(k + 1) * block.width]
        layer = F.conv2d(padded, getattr(block, f"weight{k}"), bias, dilation=dilation).relu()
        channels = torch.cat([channels, layer], 1)
    final = module.final_layer.linear
    return torch.einsum("oc,bchw->bohw", final.weight[:, :, 0], channels) + \
        final.bias[None, :, None, None]


def random_module(c_in, c_out, depth, width, dilations, seed=0):
    torch.manual_seed(seed)
    module = msd.MSDModule2d(c_in, c_out, depth, width, dilations).double()
    with torch.no_grad():  # msd_pytorch starts biases and the final layer at 0: randomise
        module.msd_block.bias.uniform_(-0.2, 0.2)
        module.final_layer.linear.weight.normal_()
        module.final_layer.linear.bias.normal_()
    return module


CONFIGS = [  # c_in, c_out, depth, width, dilations, H, W
    (1, 3, 6, 1, [1, 2, 3], 9, 11),
    (2, 4, 12, 1, list(range(1, 11)), 12, 10),
    (3, 2, 5, 2, [1, 4], 8, 8),
    # dilation >= image size: numpy's symmetric padding continues mirroring (msd_pytorch
    # reads out of bounds there); documented in msd.py
    (1, 2, 4, 1, [7, 13, 2], 6, 5),
]


@pytest.mark.parametrize("c_in,c_out,depth,width,dilations,height,width_px", CONFIGS)
def test_forward_equals_explicit_per_layer_computation(c_in, c_out, depth, width, dilations,
                                                       height, width_px):
    module = random_module(c_in, c_out, depth, width, dilations)
    x = torch.randn(3, c_in, height, width_px, dtype=torch.double)
    expected = reference_forward_numpy(module, x)
    np.testing.assert_allclose(module(x).detach().numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("c_in,c_out,depth,width,dilations,height,width_px", CONFIGS)
def test_gradients_equal_reference_autograd(c_in, c_out, depth, width, dilations, height,
                                            width_px):
    module = random_module(c_in, c_out, depth, width, dilations)
    x = torch.randn(2, c_in, height, width_px, dtype=torch.double, requires_grad=True)
    weights = torch.randn(2, c_out, height, width_px, dtype=torch.double)

    def gradients(forward):
        module.zero_grad()
        x.grad = None
        (forward(module, x) * weights).sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for p in module.parameters()]

    ours = gradients(lambda m, inp: m(inp))
    reference = gradients(reference_forward_torch)
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_gradcheck_small_network():
    module = random_module(2, 2, 3, 1, [1, 2, 3])
    x = torch.randn(1, 2, 5, 4, dtype=torch.double, requires_grad=True)
    bias, weight1 = module.msd_block.bias, module.msd_block.weight1
    block = msd_network._MSDBlockFunction.apply
    assert torch.autograd.gradcheck(
        lambda inp, b, w1: block(inp, (1, 2, 3), (None, None, None), b, module.msd_block.weight0, w1,
                                 module.msd_block.weight2), (x, bias, weight1))


def test_symmetric_index_matches_numpy_including_pad_beyond_size():
    for n, pad in [(5, 1), (5, 5), (3, 7), (1, 4), (8, 10)]:
        expected = np.pad(np.arange(n), pad, mode="symmetric")
        np.testing.assert_array_equal(msd.symmetric_index(n, pad).numpy(), expected)


def test_symmetric_padding_is_not_reflect_padding():
    """A one-layer network with a single off-centre tap reads the mirrored pixel."""
    module = msd.MSDModule2d(1, 1, 1, 1, [1]).double()
    with torch.no_grad():
        module.msd_block.weight0.zero_()
        module.msd_block.weight0[0, 0, 1, 0] = 1.0  # reads x[i, j - 1]
        module.final_layer.linear.weight[0, 1, 0] = 1.0  # output = layer 0
    x = torch.arange(1.0, 13.0, dtype=torch.double).view(1, 1, 3, 4)
    out = module(x)[0, 0]
    torch.testing.assert_close(out[:, 0], x[0, 0, :, 0])  # index -1 reads index 0
    torch.testing.assert_close(out[:, 1:], x[0, 0, :, :-1])


def test_pruning_masks_take_effect_in_forward_and_backward():
    module = random_module(1, 3, 5, 1, [1, 2])
    mask = torch.ones_like(module.msd_block.weight3)
    mask[0, 1] = 0
    mask[0, 3, 0, 0] = 0
    prune.custom_from_mask(module.msd_block, "weight3", mask)
    final_mask = torch.ones_like(module.final_layer.linear.weight)
    final_mask[1, 2] = 0
    prune.custom_from_mask(module.final_layer.linear, "weight", final_mask)
    x = torch.randn(2, 1, 7, 6, dtype=torch.double)
    np.testing.assert_allclose(module(x).detach().numpy(), reference_forward_numpy(module, x),
                               rtol=1e-10, atol=1e-10)
    module(x).pow(2).sum().backward()
    assert torch.all(module.msd_block.weight3_orig.grad[mask == 0] == 0)
    assert torch.any(module.msd_block.weight3_orig.grad[mask == 1] != 0)
    assert torch.all(module.final_layer.linear.weight_orig.grad[final_mask == 0] == 0)


# ------------------------------------------------------------------ layout
def expected_layout(c_in, c_out, depth):
    layout = [("0.weight", (c_in, c_in, 1, 1)), ("0.bias", (c_in,)),
              ("1.0.msd_block.bias", (depth,))]
    layout += [(f"1.0.msd_block.weight{k}", (1, c_in + k, 3, 3)) for k in range(depth)]
    layout += [("1.0.final_layer.linear.weight", (c_out, c_in + depth, 1)),
               ("1.0.final_layer.linear.bias", (c_out,))]
    return layout


def test_state_dict_layout_matches_msd_pytorch():
    model = msd.MSDSegmentationModel(2, 4, 3, 1, device="cpu")
    layout = [(k, tuple(v.shape)) for k, v in model.net.state_dict().items()]
    assert layout == expected_layout(2, 4, 3)
    model = msd.MSDSegmentationModel(1, 3, 4, 1, device="cpu")
    optimizer_shapes = [tuple(p.shape) for p in model.optimizer.param_groups[0]["params"]]
    assert optimizer_shapes == [shape for _, shape in expected_layout(1, 3, 4)[2:]]
    assert model.msd.msd_block.weight2.shape == (1, 3, 3, 3)
    assert model.msd.final_layer.linear.weight.shape == (3, 5, 1)
    assert (model.depth, model.width, model.c_in, model.c_out) == (4, 1, 1, 3)


def test_layout_equals_real_msd_pytorch_checkpoint():
    path = reference_checkpoint()
    if path is None:
        pytest.skip("shared/reference checkpoint not present")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = msd.MSDSegmentationModel(1, 5, 50, 1, dilations=list(range(1, 11)), device="cpu")
    ours = [(k, tuple(v.shape)) for k, v in model.net.state_dict().items()]
    theirs = [(k, tuple(v.shape)) for k, v in state["state_dict"].items()]
    assert ours == theirs == expected_layout(1, 5, 50)
    their_state = state["optimizer"]["state"]
    their_ids = state["optimizer"]["param_groups"][0]["params"]
    their_shapes = [tuple(their_state[i]["exp_avg"].shape) for i in their_ids]
    our_shapes = [tuple(p.shape) for p in model.optimizer.param_groups[0]["params"]]
    assert our_shapes == their_shapes


def test_initialisation_follows_msd_pytorch():
    torch.manual_seed(1)
    model = msd.MSDSegmentationModel(1, 5, 50, 1, device="cpu")
    weights = torch.cat([getattr(model.msd.msd_block, f"weight{k}").flatten()
                         for k in range(50)])
    expected_std = np.sqrt(2 / (9 * (1 + 49) + 5))
    assert abs(weights.std().item() / expected_std - 1) < 0.05
    assert torch.all(model.msd.msd_block.bias == 0)
    assert torch.all(model.msd.final_layer.linear.weight == 0)
    assert torch.all(model.scale_in.weight == 1) and torch.all(model.scale_in.bias == 0)


# ------------------------------------------------------------------ training surface
def threshold_problem(count=8, size=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 1, size, size, generator=generator) * 4 + 3
    y = (x > 5).long()
    return DataLoader(TensorDataset(x, y), batch_size=4)


def test_set_normalization_standardises_the_training_inputs():
    loader = threshold_problem()
    model = msd.MSDSegmentationModel(1, 2, 3, 1, device="cpu")
    model.set_normalization(loader)
    inputs = torch.cat([x for x, _ in loader])
    scaled = model.scale_in(inputs)
    assert abs(scaled.mean().item()) < 1e-5
    assert abs(scaled.std(unbiased=False).item() - 1) < 1e-4
    assert not model.scale_in.weight.requires_grad


def test_learn_train_validate_reduce_the_loss():
    torch.manual_seed(0)
    loader = threshold_problem()
    model = msd.MSDSegmentationModel(1, 2, 4, 1, dilations=[1, 2], device="cpu")
    model.set_normalization(loader)
    before = model.validate(loader)
    assert before == pytest.approx(np.log(2), rel=1e-5)  # zero final layer: uniform output
    first_input, first_target = next(iter(loader))
    assert isinstance(model.learn(first_input, first_target), float)
    for group in model.optimizer.param_groups:
        group["lr"] = 0.02
    model.train(loader, 15)
    after = model.validate(loader)
    assert after < 0.5 * before
    assert model.get_output().shape == (4, 2, 12, 12)
    assert torch.allclose(model.get_output().exp().sum(1), torch.ones(4, 12, 12), atol=1e-5)


def test_bad_inputs_and_targets_raise_value_errors():
    model = msd.MSDSegmentationModel(1, 3, 2, 1, device="cpu")
    with pytest.raises(ValueError, match=r"\(batch, 1, H, W\)"):
        model.forward(torch.zeros(1, 2, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        model.forward(torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 3))
    with pytest.raises(ValueError, match="constant"):
        model.set_normalization([(torch.ones(1, 1, 4, 4), None)])
    with pytest.raises(ValueError, match="no data"):
        model.set_normalization([])
    for bad in [dict(depth=0), dict(width=0), dict(dilations=[]), dict(dilations=[0, 1])]:
        arguments = dict(c_in=1, num_labels=2, depth=3, width=1, dilations=[1, 2]) | bad
        with pytest.raises(ValueError):
            msd.MSDSegmentationModel(arguments.pop("c_in"), arguments.pop("num_labels"),
                                     arguments.pop("depth"), arguments.pop("width"),
                                     device="cpu", **arguments)


def test_device_resolution():
    assert msd.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert msd.resolve_device(None).type == expected
    assert msd.resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            msd.resolve_device("cuda")


# ------------------------------------------------------------------ checkpoints
def trained_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = msd.MSDSegmentationModel(1, 3, 6, 1, dilations=[1, 2, 3], device="cpu", **kwargs)
    x = torch.randn(2, 1, 10, 10)
    y = torch.randint(0, 3, (2, 1, 10, 10))
    for _ in range(2):
        model.learn(x, y)
    return model, x, y


def assert_same_outputs(a, b, x):
    with torch.no_grad():
        torch.testing.assert_close(a.net(x), b.net(x), rtol=0, atol=0)


def test_save_load_round_trip(tmp_path):
    model, x, y = trained_model()
    path = tmp_path / "sub" / "model.torch"
    model.save(path, 7)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.torch"]  # no temp left
    state = torch.load(path, weights_only=True)
    # msd_pytorch's keys, plus the dilations (msd_pytorch reads only its own keys)
    assert set(state) == {"epoch", "state_dict", "optimizer", "dilations"} and state["epoch"] == 7
    fresh = msd.MSDSegmentationModel(1, 3, 6, 1, dilations=[1, 2, 3], device="cpu")
    assert fresh.load(path) == 7
    assert_same_outputs(model, fresh, x)
    # the optimizer state came along: the next Adam step is identical
    model.learn(x, y)
    fresh.learn(x, y)
    assert_same_outputs(model, fresh, x)


def prune_some(model):
    block = model.msd.msd_block
    for k in (1, 4):
        mask = (torch.rand_like(getattr(block, f"weight{k}")) > 0.5).float()
        prune.custom_from_mask(block, f"weight{k}", mask)
    prune.custom_from_mask(block, "bias", (torch.arange(6) % 2).float())
    linear = model.msd.final_layer.linear
    prune.custom_from_mask(linear, "weight", (torch.rand_like(linear.weight) > 0.3).float())


def test_pruned_save_load_keeps_masks_and_outputs(tmp_path):
    model, x, y = trained_model()
    prune_some(model)
    model.learn(x, y)
    path = tmp_path / "pruned.torch"
    model.save(path, 3)
    keys = torch.load(path, weights_only=True)["state_dict"].keys()
    assert "1.0.msd_block.weight4_orig" in keys and "1.0.msd_block.weight4_mask" in keys
    fresh = msd.MSDSegmentationModel(1, 3, 6, 1, dilations=[1, 2, 3], device="cpu")
    assert fresh.load(path) == 3
    block, saved_block = fresh.msd.msd_block, model.msd.msd_block
    for name in ("weight1", "weight4", "bias"):
        assert torch.equal(getattr(block, name + "_mask"), getattr(saved_block, name + "_mask"))
    assert torch.equal(fresh.msd.final_layer.linear.weight_mask,
                       model.msd.final_layer.linear.weight_mask)
    assert_same_outputs(model, fresh, x)
    # fine-tuning keeps the pruned entries at zero and matches the original model
    model.learn(x, y)
    fresh.learn(x, y)
    assert torch.all(block.weight4[block.weight4_mask == 0] == 0)
    assert_same_outputs(model, fresh, x)
    # loading into an already pruned model, and an unpruned checkpoint into a pruned model
    assert fresh.load(path) == 3
    reloaded = msd.MSDSegmentationModel(1, 3, 6, 1, dilations=[1, 2, 3], device="cpu")
    reloaded.load(path)
    assert_same_outputs(reloaded, fresh, x)
    plain, _, _ = trained_model(seed=5)
    plain.save(tmp_path / "plain.torch", 1)
    fresh.load(tmp_path / "plain.torch")
    assert not hasattr(fresh.msd.msd_block, "weight4_orig")
    assert_same_outputs(plain, fresh, x)


def test_load_rejects_missing_corrupt_and_mismatched_checkpoints(tmp_path):
    model, _, _ = trained_model()
    with pytest.raises(FileNotFoundError, match="nowhere.torch"):
        model.load(tmp_path / "nowhere.torch")
    corrupt = tmp_path / "corrupt.torch"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.torch"):
        model.load(corrupt)
    truncated = tmp_path / "truncated.torch"
    model.save(truncated, 1)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.torch"):
        model.load(truncated)
    bare = tmp_path / "bare.torch"
    torch.save(model.net.state_dict(), bare)
    with pytest.raises(ValueError, match="'epoch', 'state_dict'"):
        model.load(bare)
    for other, described in [(dict(depth=5), "depth=5"), (dict(c_in=2), "c_in=2"),
                             (dict(num_labels=4), "num_labels=4")]:
        arguments = dict(c_in=1, num_labels=3, depth=6) | other
        other_model = msd.MSDSegmentationModel(arguments["c_in"], arguments["num_labels"],
                                               arguments["depth"], 1, device="cpu")
        other_model.save(tmp_path / "other.torch", 0)
        with pytest.raises(ValueError, match=rf"other.torch.*{described}.*expects.*depth=6"):
            model.load(tmp_path / "other.torch")
    wide = msd.MSDSegmentationModel(1, 3, 6, 2, device="cpu")
    wide.save(tmp_path / "wide.torch", 0)
    with pytest.raises(ValueError, match="width=2"):
        model.load(tmp_path / "wide.torch")


def test_real_msd_pytorch_checkpoint_loads_and_fine_tunes():
    path = reference_checkpoint()
    if path is None:
        pytest.skip("shared/reference checkpoint not present")
    model = msd.MSDSegmentationModel(1, 5, 50, 1, dilations=list(range(1, 11)), device="cpu")
    assert model.load(path) == 47
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    torch.testing.assert_close(model.msd.msd_block.weight49, state["1.0.msd_block.weight49"])
    x, y = torch.randn(1, 1, 16, 16), torch.randint(0, 5, (1, 1, 16, 16))
    model.learn(x, y)  # Adam continues from msd_pytorch's optimizer state (step 4800)
    step = model.optimizer.state[model.msd.msd_block.bias]["step"]
    assert int(step) == 4801


def load_generator():
    from pruning_toolkit.experiments import cs_data
    return cs_data


def test_real_checkpoint_pixel_accuracy_on_cs_test_set():
    """The reference's number: 0.9534 on the 50 CS test images (seed 12345, noisy input)."""
    path = reference_checkpoint()
    if path is None:
        pytest.skip("shared/reference checkpoint not present")
    start = time.perf_counter()
    generator = load_generator()
    test_images = [(noisy, label) for split, _, noisy, _, label in
                   generator.generate_cs_images({"train": 500, "val": 100, "test": 50})
                   if split == "test"]
    inputs = torch.from_numpy(np.stack([noisy for noisy, _ in test_images]))[:, None]
    labels = torch.from_numpy(np.stack([label for _, label in test_images])).long()
    model = msd.MSDSegmentationModel(1, 5, 50, 1, dilations=list(range(1, 11)), device="cpu")
    model.load(path)
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=10)
    accuracy = msd.get_global_accuracy(model, loader)
    assert f"{accuracy:.4f}" == "0.9534"
    print(f"real checkpoint accuracy {accuracy:.6f} in {time.perf_counter() - start:.1f} s")


# ------------------------------------------------------------------ data and accuracy
def write_tiffs(folder, images, names):
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, names):
        tifffile.imwrite(folder / name, image, photometric="minisblack")


def test_image_dataset_reads_sorts_and_relabels(tmp_path):
    names = ["im2.tiff", "im10.tiff", "im1.tiff"]
    inputs = [np.full((4, 5), i, np.float32) for i in (2, 10, 1)]
    targets = [np.array([[0, 10], [20, 10]], np.uint8) for _ in names]
    targets[1][0, 0] = 20
    write_tiffs(tmp_path / "in", inputs, names)
    write_tiffs(tmp_path / "out", targets, names)
    data = msd.ImageDataset(str(tmp_path / "in" / "*.tiff"), str(tmp_path / "out" / "*.tiff"),
                            labels=[0, 10, 20])
    assert len(data) == 3 and data.num_labels == 3
    assert [Path(p).name for p in data.input_stack.paths] == ["im1.tiff", "im2.tiff",
                                                             "im10.tiff"]
    image, target = data[2]
    assert image.dtype == torch.float32 and image.shape == (1, 4, 5) and image[0, 0, 0] == 10
    assert target.dtype == torch.int64
    assert target.tolist() == [[[2, 1], [2, 1]]]
    counted = msd.ImageDataset(str(tmp_path / "in"), str(tmp_path / "in"), labels=None)
    assert len(counted) == 3


def test_image_dataset_multichannel_and_label_count(tmp_path):
    write_tiffs(tmp_path / "in", [np.random.rand(3, 4, 4).astype(np.float32)], ["a.tif"])
    write_tiffs(tmp_path / "lab", [np.array([[0, 1], [2, 1]], np.uint8)], ["a.tif"])
    data = msd.ImageDataset(str(tmp_path / "in" / "*.tif"), str(tmp_path / "lab" / "*.tif"),
                            labels=3)
    assert data[0][0].shape == (3, 4, 4)
    assert data[0][1].tolist() == [[[0, 1], [2, 1]]]
    collapsed = msd.ImageDataset(str(tmp_path / "in" / "*.tif"),
                                 str(tmp_path / "lab" / "*.tif"), labels=3,
                                 collapse_channels=True)
    assert collapsed[0][0].shape == (1, 4, 4)


def test_image_dataset_errors(tmp_path):
    write_tiffs(tmp_path / "in", [np.zeros((2, 2), np.float32)] * 2, ["a.tiff", "b.tiff"])
    write_tiffs(tmp_path / "lab", [np.array([[0, 7]], np.uint8)], ["a.tiff"])
    write_tiffs(tmp_path / "flt", [np.zeros((2, 2), np.float32)] * 2, ["a.tiff", "b.tiff"])
    with pytest.raises(FileNotFoundError, match="nothing"):
        msd.ImageDataset(str(tmp_path / "nothing" / "*.tiff"), str(tmp_path / "lab" / "*"))
    with pytest.raises(ValueError, match=r"2 input images match .*in.*but 1 target .*lab"):
        msd.ImageDataset(str(tmp_path / "in" / "*.tiff"), str(tmp_path / "lab" / "*.tiff"))
    single = msd.ImageDataset(str(tmp_path / "in" / "a.tiff"), str(tmp_path / "lab" / "a.tiff"),
                              labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"a.tiff: label values \[7\] are not in"):
        single[0]
    floats = msd.ImageDataset(str(tmp_path / "in" / "*"), str(tmp_path / "flt" / "*"),
                              labels=2)
    with pytest.raises(ValueError, match="dtype float32"):
        floats[0]
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="only TIFF"):
        msd.ImageDataset(str(tmp_path / "png" / "*"), str(tmp_path / "png" / "*"))


class FixedScores(torch.nn.Module):
    """Returns class scores that are one-hot in a fixed prediction."""

    def __init__(self, prediction, as_dict=False):
        super().__init__()
        self.prediction = prediction
        self.as_dict = as_dict
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        scores = F.one_hot(self.prediction[: x.shape[0]], 3).permute(0, 3, 1, 2).float()
        return {"out": scores} if self.as_dict else scores


def test_global_accuracy_counts_correct_pixels():
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randint(0, 3, (4, 5, 6), generator=generator)
    target = prediction.clone()
    target[0, :2] = (target[0, :2] + 1) % 3  # 12 wrong pixels
    target[3, 4, 5] = (target[3, 4, 5] + 2) % 3  # 1 more
    loader = DataLoader(TensorDataset(torch.zeros(4, 1, 5, 6), target[:, None]), batch_size=4)
    expected = 1 - 13 / target.numel()
    assert msd.get_global_accuracy(FixedScores(prediction), loader) == pytest.approx(expected)
    assert msd.get_global_accuracy(FixedScores(prediction, True), loader) == \
        pytest.approx(expected)


# ------------------------------------------------------------------ broken checkpoints
def test_a_checkpoint_remembers_its_dilations(tmp_path):
    model = msd.MSDSegmentationModel(1, 2, 4, 1, dilations=[1, 2, 3], device="cpu")
    model.save(tmp_path / "m.torch", 1)
    other = msd.MSDSegmentationModel(1, 2, 4, 1, dilations=[1, 2], device="cpu")
    with pytest.raises(ValueError, match=r"trained with dilations \[1, 2, 3\], this model has \[1, 2\]"):
        other.load(tmp_path / "m.torch")


def malformed_checkpoints(tmp_path):
    good = msd.MSDSegmentationModel(1, 2, 3, 1, device="cpu")
    good.save(tmp_path / "good.torch", 1)
    state = torch.load(tmp_path / "good.torch", weights_only=True)
    nan_state = dict(state, state_dict=dict(state["state_dict"]))
    nan_state["state_dict"]["1.0.msd_block.weight1"] = torch.full((1, 2, 3, 3), float("nan"))
    cases = {"empty": b"", "text": b"hello", "list state_dict": dict(state, state_dict=[1, 2]),
             "epoch None": dict(state, epoch=None), "optimizer string": dict(state, optimizer="adam"),
             "NaN weights": nan_state, "not a dict": [1, 2, 3]}
    paths = {}
    for name, content in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.torch"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        paths[name] = path
    return paths


def test_malformed_checkpoints_are_one_error_naming_the_file(tmp_path):
    for name, path in malformed_checkpoints(tmp_path).items():
        model = msd.MSDSegmentationModel(1, 2, 3, 1, device="cpu")
        with pytest.raises(ValueError) as error:
            model.load(path)
        message = str(error.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, (name, message)


def test_an_unsafe_pickle_is_refused_with_our_message(tmp_path):
    path = tmp_path / "unsafe.torch"
    torch.save({"epoch": 1, "state_dict": {}, "optimizer": None, "payload": Path("x")}, path)
    with pytest.raises(ValueError, match="never unpickled") as error:
        msd.read_checkpoint(path, "cpu")
    assert "weights_only" not in str(error.value)


def test_a_save_that_cannot_be_written_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match=f"cannot write {blocker / 'm.torch'}"):
        msd.save_checkpoint({"epoch": 1}, blocker / "m.torch")

    def full_disk(state, path):   # what torch raises when the disk fills mid-write
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 1280 vs 1216")
    target = tmp_path / "m.torch"
    target.write_bytes(b"the earlier model")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=f"cannot write {target}: .*unexpected pos"):
        msd.save_checkpoint({"epoch": 1}, target)
    assert target.read_bytes() == b"the earlier model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "m.torch"]
