"""Fine-tuning a pruned MS-D computes only what is alive (msd.MSDBlock2d.live_reads), exactly:
the same losses, weights, biases and Adam state as dense masked training."""
import copy

import pytest
import torch
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

import msd
from pruning_toolkit import msd_network
import pruning_algorithms as lean
from lean_helpers import random_msd

pytestmark = pytest.mark.usefixtures("one_thread")

ALWAYS_DENSE, ALWAYS_SPARSE = 0.0, 2.0   # values of msd.SPARSE_READ_BELOW; ALWAYS_DENSE is the dense masked reference


def lean_pruned(seed, kept, depth=14, c_in=1, steps=2):
    """An MS-D model with N(0, 0.3^2) weights, LEAN-pruned in ``steps`` steps (with redundancy
    pruning: bias masks and whole dead layers), with a fresh Adam."""
    model = random_msd(seed, c_in=c_in, c_out=3, depth=depth, dilations=(1, 2, 3, 4))
    with torch.no_grad():
        for parameter in model.msd.parameters():
            parameter.mul_(0.3)
    for step in range(1, steps + 1):
        lean.LEAN_SV_MSD_3x3(model, kept ** (step / steps))
    return model


def randomly_pruned(seed, kept, depth=12, c_in=2, width=2):
    """An MS-D model of width > 1 (which LEAN's MS-D graph does not take) with random kernel
    masks, and the biases of channels without a live kernel pruned."""
    torch.manual_seed(seed)
    model = msd.MSDSegmentationModel(c_in, 3, depth, width, dilations=[1, 2, 3, 4], device="cpu")
    block = model.msd.msd_block
    with torch.no_grad():
        for parameter in model.msd.parameters():
            parameter.normal_(0, 0.3)
        bias_mask = torch.ones_like(block.bias)
        for k in range(depth):
            weight = getattr(block, f"weight{k}")
            kernel_mask = (torch.rand(weight.shape[:2]) < kept).double()
            prune.custom_from_mask(block, f"weight{k}", kernel_mask[:, :, None, None].expand_as(weight))
            bias_mask[k * width:(k + 1) * width] = kernel_mask.any(1).double()
        prune.custom_from_mask(block, "bias", bias_mask)
    return model


def batches(seed, c_in=1, count=3, size=12):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count * 2, c_in, size, size + 3, generator=generator)
    y = torch.randint(0, 3, (count * 2, 1, size, size + 3), generator=generator)
    return list(DataLoader(TensorDataset(x, y), batch_size=2))


def train(model, data, threshold, monkeypatch, compiled=True):
    """Training steps; ``threshold`` ALWAYS_DENSE: every layer reads every earlier channel."""
    monkeypatch.setattr(msd_network, "SPARSE_READ_BELOW", threshold)
    compiled = compiled and threshold != ALWAYS_DENSE
    if threshold == ALWAYS_SPARSE:
        monkeypatch.setattr(msd_network, "DENSE_BLOCK_ABOVE", float("inf"))
    monkeypatch.setattr(msd_network, "USE_COMPILED_KERNELS", compiled)
    monkeypatch.setattr(msd_network, "COMPILED_READS_UP_TO", 8)  # every small layer on the kernels
    losses = [model.learn(x, y) for x, y in data]
    monkeypatch.undo()
    return losses


def assert_same_training_state(fast, dense):
    fast_params = dict(fast.net.named_parameters())
    for name, parameter in dense.net.named_parameters():
        torch.testing.assert_close(fast_params[name], parameter, rtol=1e-5, atol=1e-6, msg=name)
    fast_state, dense_state = fast.optimizer.state_dict()["state"], dense.optimizer.state_dict()["state"]
    assert fast_state.keys() == dense_state.keys()
    for index in dense_state:
        for key in ("exp_avg", "exp_avg_sq"):   # float tolerance relative to the tensor's scale
            expected = dense_state[index][key]
            torch.testing.assert_close(fast_state[index][key], expected, rtol=1e-5,
                                       atol=1e-5 * float(expected.abs().max()), msg=f"{index} {key}")
        assert float(fast_state[index]["step"]) == float(dense_state[index]["step"])


PRUNED_MODELS = {"lean 0.3": lambda: lean_pruned(1, 0.3), "lean 0.08": lambda: lean_pruned(1, 0.08),
                 "lean 1.0": lambda: lean_pruned(1, 1.0), "lean 0.2, c_in 2": lambda: lean_pruned(1, 0.2, c_in=2),
                 "random, width 2": lambda: randomly_pruned(1, 0.2)}


@pytest.mark.parametrize("name", PRUNED_MODELS)
@pytest.mark.parametrize("threshold", [ALWAYS_SPARSE, msd_network.SPARSE_READ_BELOW])
@pytest.mark.parametrize("compiled", [True, False], ids=["numba kernels", "matrix products"])
def test_adam_steps_of_the_fast_path_equal_dense_masked_training(name, threshold, compiled, monkeypatch):
    model = PRUNED_MODELS[name]()
    dense, fast = model, copy.deepcopy(model)
    data = batches(2, model.c_in)
    dense_losses = train(dense, data, ALWAYS_DENSE, monkeypatch)
    fast_losses = train(fast, data, threshold, monkeypatch, compiled)
    assert fast_losses == pytest.approx(dense_losses, rel=1e-6)
    assert_same_training_state(fast, dense)
    for k in range(fast.depth):   # pruned kernels stay exactly zero
        block = fast.msd.msd_block
        mask = getattr(block, f"weight{k}_mask", None)
        if mask is not None:
            assert torch.all(getattr(block, f"weight{k}")[mask == 0] == 0)


def test_a_lightly_pruned_block_runs_dense_on_matrix_products(monkeypatch):
    monkeypatch.setattr(msd_network, "USE_COMPILED_KERNELS", False)
    block = lean_pruned(3, 0.9, depth=20).msd.msd_block
    assert block.live_reads() == [None] * block.depth


def test_layers_reading_few_channels_run_the_compiled_kernels_even_unpruned(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setattr(msd_network, "COMPILED_READS_UP_TO", 3)
    model = random_msd(12, c_in=1, c_out=3, depth=6, dilations=(1, 2, 3))
    reads = model.msd.msd_block.live_reads()
    assert [None if r is None else r.tolist() for r in reads] == [[0], [0, 1], [0, 1, 2], None, None, None]
    dense, fast = model, copy.deepcopy(model)
    data = batches(13)
    assert train(fast, data, msd_network.SPARSE_READ_BELOW, monkeypatch) == pytest.approx(
        train(dense, data, ALWAYS_DENSE, monkeypatch), rel=1e-6)
    assert_same_training_state(fast, dense)


def test_heavily_pruned_network_reads_few_channels_and_skips_dead_layers():
    model = lean_pruned(3, 0.08, depth=20)
    block = model.msd.msd_block
    reads = block.live_reads()
    read_counts = [block.in_channels + k if read is None else read.numel() for k, read in enumerate(reads)]
    dense_counts = [block.in_channels + k for k in range(block.depth)]
    assert sum(read_counts) < 0.3 * sum(dense_counts)
    dead = [k for k in range(block.depth)
            if block.bias_mask[k] == 0 and not getattr(block, f"weight{k}_mask").any()]
    assert dead, "the test needs a dead layer"
    for k in dead:   # a layer whose bias and kernels are all pruned reads nothing
        assert reads[k] is not None and reads[k].numel() == 0


def test_a_layer_reading_only_dead_channels_is_skipped_exactly(monkeypatch):
    """Kernels left unpruned on a constant-zero channel are not read; their gradients stay zero."""
    monkeypatch.setattr(msd_network, "DENSE_BLOCK_ABOVE", float("inf"))
    model = random_msd(4, c_in=1, c_out=3, depth=5, dilations=(1, 2))
    block = model.msd.msd_block
    with torch.no_grad():
        prune.custom_from_mask(block, "weight0", torch.zeros_like(block.weight0))   # layer 0: dead...
        bias_mask = torch.ones_like(block.bias)
        bias_mask[0] = 0
        prune.custom_from_mask(block, "bias", bias_mask)
        mask2 = torch.zeros_like(block.weight2)
        mask2[0, 1] = 1                                                        # layer 2 reads only layer 0
        prune.custom_from_mask(block, "weight2", mask2)
    reads = block.live_reads()
    assert reads[0].numel() == 0 and reads[2].numel() == 0
    dense, fast = model, copy.deepcopy(model)
    data = batches(5)
    assert train(fast, data, ALWAYS_SPARSE, monkeypatch) == pytest.approx(
        train(dense, data, ALWAYS_DENSE, monkeypatch), rel=1e-6)
    assert_same_training_state(fast, dense)
    assert torch.all(fast.msd.msd_block.weight2_orig.grad[0, 1] == 0)


def test_constant_channel_of_a_layer_with_a_live_positive_bias(monkeypatch):
    """A layer whose kernels are all pruned but whose bias is not outputs relu(bias)."""
    monkeypatch.setattr(msd_network, "DENSE_BLOCK_ABOVE", float("inf"))
    model = random_msd(6, c_in=1, c_out=3, depth=4, dilations=(1, 2))
    block = model.msd.msd_block
    with torch.no_grad():
        block.bias[1] = 0.7
        prune.custom_from_mask(block, "weight1", torch.zeros_like(block.weight1))
    assert block.live_reads()[1].numel() == 0
    dense, fast = model, copy.deepcopy(model)
    data = batches(7)
    assert train(fast, data, ALWAYS_SPARSE, monkeypatch) == pytest.approx(
        train(dense, data, ALWAYS_DENSE, monkeypatch), rel=1e-6)
    assert_same_training_state(fast, dense)


def test_reads_follow_mask_changes(monkeypatch):
    monkeypatch.setattr(msd_network, "DENSE_BLOCK_ABOVE", float("inf"))
    model = lean_pruned(8, 0.3, depth=10)
    block = model.msd.msd_block
    before = [None if r is None else r.clone() for r in block.live_reads()]
    lean.LEAN_SV_MSD_3x3(model, 0.05)        # new masks
    after = block.live_reads()
    assert any((a is None) != (b is None) or (a is not None and not torch.equal(a, b))
               for a, b in zip(before, after))
    with torch.no_grad():                    # an in-place mask edit is seen too
        block.weight9_mask.zero_()
        block.bias_mask[9] = 0
    assert block.live_reads()[9].numel() == 0


@pytest.mark.parametrize("compiled", [True, False], ids=["numba kernels", "matrix products"])
def test_gradcheck_of_sparse_reads(compiled, monkeypatch):
    monkeypatch.setattr(msd_network, "USE_COMPILED_KERNELS", compiled)
    monkeypatch.setattr(msd_network, "COMPILED_READS_UP_TO", 8)  # every small layer on the kernels
    torch.manual_seed(0)
    x = torch.randn(2, 2, 5, 6, dtype=torch.double, requires_grad=True)
    bias = torch.randn(4, dtype=torch.double, requires_grad=True)
    reads = (None, torch.tensor([0, 2]), torch.tensor([], dtype=torch.long), torch.tensor([1, 3, 4]))
    weights = [torch.randn(1, 2 if r is None else r.numel(), 3, 3, dtype=torch.double, requires_grad=True)
               for r in reads]
    with torch.no_grad():
        bias[2] = 0.5                         # the layer reading nothing is a live constant
    function = msd_network._MSDBlockFunction.apply
    assert torch.autograd.gradcheck(lambda inp, b, *w: function(inp, (1, 2, 1, 3), reads, b, *w),
                                    (x, bias, *weights))


def test_checkpoint_of_sparse_training_loads_anywhere(tmp_path):
    model = lean_pruned(9, 0.1)
    for x, y in batches(10):
        model.learn(x, y)
    model.save(tmp_path / "pruned.torch", epoch=3)
    state = torch.load(tmp_path / "pruned.torch", weights_only=True)
    assert {"epoch", "state_dict", "optimizer"} <= set(state)
    assert "1.0.msd_block.weight5_mask" in state["state_dict"]
    reloaded = msd.MSDSegmentationModel(1, 3, 14, 1, dilations=[1, 2, 3, 4], device="cpu")
    assert reloaded.load(tmp_path / "pruned.torch") == 3
    x = batches(11)[0][0]
    with torch.no_grad():
        torch.testing.assert_close(reloaded.net(x), model.net(x))


def test_compiled_kernel_limit_comes_from_the_environment(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setattr(msd_network, "COMPILED_READS_UP_TO", None)
    env = msd_network.COMPILED_READS_ENV
    buffer, one_read = torch.zeros(2, 1, 4, 4), torch.tensor([0])
    try:
        for text, expected in (("", 8), ("0", 0), (" 3 ", 3)):
            monkeypatch.setenv(env, text)
            msd_network._compiled_reads_from_environment.cache_clear()
            assert msd_network.compiled_reads_up_to() == expected
            assert (msd_network._compiled_kernels(buffer, one_read, 2) is None) == (expected == 0)
        monkeypatch.setenv(env, "many")
        msd_network._compiled_reads_from_environment.cache_clear()
        with pytest.raises(ValueError, match=f"{env}='many': expected a whole number"):
            msd_network.compiled_reads_up_to()
    finally:
        msd_network._compiled_reads_from_environment.cache_clear()


@pytest.mark.parametrize("pixels", [3 * 512 + 77, 4 * 512, 700])
def test_weight_gradient_summed_over_chunks_of_pixels_equals_one_product(pixels):
    torch.manual_seed(pixels)
    spread = torch.randn(9, pixels, dtype=torch.double)
    buffer = torch.randn(6, pixels, dtype=torch.double)
    source = buffer[1:4]                                  # rows of a larger matrix, as the block reads them
    summed = msd_network._products_summed_over_pixels(spread, source, chunk=512)
    torch.testing.assert_close(summed, spread @ source.t())


def test_reads_first_listed_under_inference_mode_serve_training_later():
    model = lean_pruned(14, 0.2)
    x, y = batches(15)[0]
    with torch.inference_mode():
        model.net(x)                          # the reads are listed and cached here
    model.learn(x, y)                         # ... and index the weights under autograd here
