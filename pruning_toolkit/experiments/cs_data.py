"""Generate the Circle-Square (CS) segmentation data of the LEAN example experiment.

Bit-identical to the reference generator with the default flags: one random stream seeded
once (np.random.seed(12345) in the reference), then the training, validation and test
images in that order. Each image holds 24 shapes cycling filled square, hollow square,
disc, ring, with random positions and intensities; labels 1..4 mark the filled area of
each shape (a hollow shape gets its filled twin's area), 0 the background. Writes
``{out}/{train,val,test}/{noisy,noiseless,label}/00000.tiff ...``.

    python examples/generate_example_data.py [--out DIR] [--train 500 --val 100 --test 50]
"""
import sys
from pathlib import Path

import numpy as np
import tifffile

from pruning_toolkit.cli import OneLineErrorParser
from pruning_toolkit.experiments import EXAMPLES_DIR
from pruning_toolkit.files import write_atomically

SHAPES_PER_IMAGE = 24
MAX_PLACEMENT_TRIES = 100_000
SPLITS = ("train", "val", "test")
MAX_SIZE = 8192  # an 8192 x 8192 image takes about 0.8 GB while it is drawn
DEFAULT_OUT = EXAMPLES_DIR / "data"


def cs_templates(side):
    """The four shape templates of side ``side``: filled square, hollow square, disc, ring."""
    square = np.ones((side, side))
    hollow = square.copy()
    hollow[side // 4:-side // 4, side // 4:-side // 4] = 0
    xx, yy = np.mgrid[-1:1:side * 1j, -1:1:side * 1j]
    disc = xx ** 2 + yy ** 2 < 1
    ring = disc.copy()
    ring[xx ** 2 + yy ** 2 < 0.25] = 0
    return [square, hollow, disc, ring]


def make_cs_image(rng, size=256, templates=None):
    """One CS image drawn from ``rng`` (a numpy RandomState): (noisy float32,
    noiseless float32, label uint8), each size x size."""
    side = size // 8
    templates = cs_templates(side) if templates is None else templates
    image = np.zeros((size, size), dtype=np.float32)
    label = np.zeros((size, size), dtype=np.uint8)
    shape_type = 0
    for _ in range(SHAPES_PER_IMAGE):
        for _ in range(MAX_PLACEMENT_TRIES):
            x, y = (rng.random_sample(2) * (size - side)).astype(int)
            if label[x:x + side, y:y + side].max() == 0:
                break
        else:
            raise ValueError(f"cannot place {SHAPES_PER_IMAGE} shapes of side {side} "
                             f"without overlap in a {size}x{size} image")
        intensity = rng.random_sample() * 0.8 + 0.2
        image[x:x + side, y:y + side] = templates[shape_type] * intensity
        label[x:x + side, y:y + side] = templates[2 * (shape_type // 2)] * (shape_type + 1)
        shape_type = (shape_type + 1) % 4
    noisy = image + rng.normal(size=image.shape)
    return noisy.astype(np.float32), image, label


def generate_cs_images(counts, size=256, seed=12345):
    """Yield (split, index, noisy, noiseless, label) for ``counts`` = {split: n}, drawn in
    the reference order (train, val, test) from one stream seeded with ``seed``."""
    rng = np.random.RandomState(seed)  # the same stream as np.random.seed(seed)
    templates = cs_templates(size // 8)
    for split in SPLITS:
        for index in range(counts.get(split, 0)):
            yield (split, index, *make_cs_image(rng, size, templates))


def generate_example_data(out, counts, size=256, seed=12345, progress=None):
    """Write the CS set under ``out``; ``progress`` wraps the image iterator (e.g. tqdm)."""
    out = Path(out)
    for split in SPLITS:
        for kind in ("noisy", "noiseless", "label"):
            (out / split / kind).mkdir(parents=True, exist_ok=True)
    images = generate_cs_images(counts, size, seed)
    if progress is not None:
        images = progress(images, total=sum(counts.values()))
    for split, index, noisy, noiseless, label in images:
        for kind, array in (("noisy", noisy), ("noiseless", noiseless), ("label", label)):
            write_atomically(out / split / kind / f"{index:05d}.tiff",
                             lambda temporary: tifffile.imwrite(temporary, array))  # noqa: B023 (called at once)


def cs_dataset(data_dir, split, limit=None):
    """One split of the CS data under ``data_dir`` (noisy input, labels 0-4), its first ``limit`` images."""
    import torch  # here: generating the data needs no torch
    from pruning_toolkit.tiff_images import ImageDataset
    dataset = ImageDataset(str(data_dir / split / "noisy" / "*.tiff"),
                           str(data_dir / split / "label" / "*.tiff"), labels=[0, 1, 2, 3, 4])
    if limit is not None and limit < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(limit))
    return dataset


def cs_split(data_dir, split, limit=None):
    """One split of the CS data; a clear FileNotFoundError when the folder holds no images."""
    try:
        return cs_dataset(Path(data_dir), split, limit)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"data folder {data_dir} holds no CS {split} images ({error}); make them with "
            f"python examples/generate_example_data.py --out {data_dir}") from None


def has_cs_images(data_dir):
    """Whether every split of ``data_dir`` holds noisy and label TIFFs."""
    return all(any((Path(data_dir) / split / kind).glob("*.tif*"))
               for split in SPLITS for kind in ("noisy", "label"))


def parse_args(argv=None):
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="data folder (default: examples/data next to this script)")
    parser.add_argument("--train", type=int, default=500, help="training images (500)")
    parser.add_argument("--val", type=int, default=100, help="validation images (100)")
    parser.add_argument("--test", type=int, default=50, help="test images (50)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (256)")
    parser.add_argument("--seed", type=int, default=12345, help="random seed (12345)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("train", "val", "test"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if not 32 <= args.size <= MAX_SIZE:
        parser.error(f"--size must lie in [32, {MAX_SIZE}] (shapes are size // 8 wide), got {args.size}")
    if str(args.out) in ("", "."):
        parser.error("--out must name a data folder")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; name a data folder")
    if not 0 <= args.seed < 2 ** 32:
        parser.error(f"--seed must be in [0, 2**32), got {args.seed}")
    return args


def main(argv=None):
    args = parse_args(argv)
    progress = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm
        progress = lambda it, total: tqdm(it, total=total, desc="CS images", unit="image")
    counts = {"train": args.train, "val": args.val, "test": args.test}
    try:
        generate_example_data(args.out, counts, args.size, args.seed, progress)
    except (OSError, ValueError) as error:
        print(f"generate_example_data.py: {error}", file=sys.stderr)
        return 1
    print(f"wrote {sum(counts.values())} CS images to {args.out}")
    return 0
