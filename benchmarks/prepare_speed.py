"""Photo preparation speed: our dataset step against the plain Pillow loop.

    python benchmarks/prepare_speed.py                       # 40 photos of 12 MP (4000x3000)
    python benchmarks/prepare_speed.py --count 5 --width 800 --height 600

Writes seeded synthetic JPEGs (noise over gradients, every fourth one stored
sideways with EXIF orientation 6 like a portrait phone photo) into a temporary
folder, then times
- plain: for each file Image.open, exif_transpose, convert RGB, centre square crop,
  LANCZOS resize, save PNG;
- ours:  read the files, `prepare_many` (reduced JPEG decode, face detection, crop,
  LANCZOS resize, one process per core), save the PNGs;
and prints both times, the ratio and how far our pixels are from the plain loop's
(mean and max absolute difference, 0-255). Needs Pillow, numpy and OpenCV (no prefect).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dreambooth_core.photos.crop import centre_square  # noqa: E402
from dreambooth_core.photos.prepare import prepare_many  # noqa: E402


def make_photos(folder: Path, count: int, width: int, height: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    ramp_x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    ramp_y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    files = []
    for index in range(count):
        colour = rng.uniform(40, 200, 3).astype(np.float32)
        pixels = colour * (0.5 + ramp_x) * (0.6 + 0.4 * ramp_y) + rng.normal(0, 12, (height, width, 3))
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        exif = Image.Exif()
        if index % 4 == 3:
            image, exif[0x0112] = image.transpose(Image.Transpose.ROTATE_90), 6
        file = folder / f"photo ({index + 1}).jpg"
        image.save(file, format="JPEG", quality=92, exif=exif)
        files.append(file)
    return files


def plain_loop(files: list[Path], out: Path, resolution: int) -> None:
    for file in files:
        with Image.open(file) as photo:
            image = ImageOps.exif_transpose(photo).convert("RGB")
        square = image.crop(centre_square(image)).resize((resolution, resolution), Image.Resampling.LANCZOS)
        square.save(out / f"{file.stem}.png")


def our_preparation(files: list[Path], out: Path, resolution: int, workers: int | None) -> None:
    photos = [(file.name, file.read_bytes()) for file in files]
    for file, prepared in zip(files, prepare_many(photos, resolution, workers)):
        (out / f"{file.stem}.png").write_bytes(prepared.png)


def difference(a: Path, b: Path) -> tuple[float, int]:
    diffs = [np.abs(np.asarray(Image.open(x), dtype=np.int16) - np.asarray(Image.open(b / x.name), dtype=np.int16))
             for x in sorted(a.iterdir())]
    return float(np.mean([d.mean() for d in diffs])), int(max(d.max() for d in diffs))


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="prepare-speed-") as work:
        work = Path(work)
        (work / "photos").mkdir(), (work / "plain").mkdir(), (work / "ours").mkdir()
        files = make_photos(work / "photos", args.count, args.width, args.height)
        start = time.perf_counter()
        plain_loop(files, work / "plain", args.resolution)
        plain = time.perf_counter() - start
        start = time.perf_counter()
        our_preparation(files, work / "ours", args.resolution, args.workers)
        ours = time.perf_counter() - start
        mean, largest = difference(work / "plain", work / "ours")
    return {"photos": args.count, "size": f"{args.width}x{args.height}", "resolution": args.resolution,
            "plain_s": round(plain, 2), "ours_s": round(ours, 2), "speedup": round(plain / ours, 2),
            "mean_abs_diff": round(mean, 3), "max_abs_diff": largest,
            "workers": args.workers or os.cpu_count(), "cpu_count": os.cpu_count(),
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
            "pillow": Image.__version__}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    print(json.dumps(run(parser.parse_args(argv)), indent=2))


if __name__ == "__main__":
    main()
