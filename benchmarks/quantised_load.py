"""Host memory while the frozen denoiser loads quantised (--base-precision) versus as today (fp32).

    python benchmarks/quantised_load.py                  # FLUX.1's width, 1 double + 2 single blocks
    python benchmarks/quantised_load.py --double 2 --single 4 --precisions auto int8

Writes a FLUX.1 transformer at its published width (3072, 24 heads) with fewer blocks and random
weights, stored in bf16 as the published files are, then loads it in a fresh process for each
precision through the project's own loader (`load_component`, as a family's load_parts does) on
the CPU, sampling the process's anonymous memory (RssAnon: what the host must really hold; the
file's pages the kernel maps in are left out, since it can drop them) every 10 ms. A load that
first built the model in fp32 would peak at 4 bytes a weight or more; quantised loading reads
each weight, quantises it and moves on, so int8 should peak near 1 byte a weight (plus the
unquantised norms and biases and one tensor in flight). nf4 quantises on a GPU and is not measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_transformer(folder: Path, double: int, single: int) -> int:
    import torch
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(num_layers=double, num_single_layers=single, guidance_embeds=True)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    model.save_pretrained(folder / "transformer")
    return sum(p.numel() for p in model.parameters())


def anonymous_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def measure(folder: str, precision: str) -> dict:
    """In this process: the peak anonymous memory over the baseline while loading."""
    from diffusers import FluxTransformer2DModel

    from dreambooth_core.families.family import load_component
    from dreambooth_core.families.quantised import BasePrecision

    base = BasePrecision(precision, "bf16")  # as on a GPU with bf16
    if base.quantised:
        import torchao  # noqa: F401 - imported before the baseline, as a run has
    baseline, peak, done = anonymous_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anonymous_bytes())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.monotonic()
    model = load_component(FluxTransformer2DModel, folder, "transformer", True, base)
    seconds = time.monotonic() - began
    done.set()
    sampler.join()
    peak[0] = max(peak[0], anonymous_bytes())
    return {"precision": precision, "peak_bytes": peak[0] - baseline, "held_bytes": anonymous_bytes() - baseline,
            "seconds": round(seconds, 1), "type": type(model).__name__}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--double", type=int, default=1, help="double-stream blocks (FLUX.1 has 19)")
    parser.add_argument("--single", type=int, default=2, help="single-stream blocks (FLUX.1 has 38)")
    parser.add_argument("--precisions", nargs="+", default=["auto", "int8", "fp8"])
    parser.add_argument("--measure", nargs=2, metavar=("FOLDER", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    with tempfile.TemporaryDirectory() as work:
        weights = write_transformer(Path(work), args.double, args.single)
        print(f"FLUX.1-width transformer, {args.double} double + {args.single} single blocks: "
              f"{weights / 1e9:.2f} B weights; bf16 file {2 * weights / 2**30:.2f} GiB, "
              f"fp32 {4 * weights / 2**30:.2f} GiB")
        print(f"{'precision':>9} | {'peak GiB':>8} | {'bytes/weight':>12} | {'held GiB':>8} | seconds")
        for precision in args.precisions:
            run = subprocess.run([sys.executable, __file__, "--measure", work, precision], capture_output=True,
                                 text=True, check=True)
            row = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"{precision:>9} | {row['peak_bytes'] / 2**30:8.2f} | {row['peak_bytes'] / weights:12.2f} | "
                  f"{row['held_bytes'] / 2**30:8.2f} | {row['seconds']}")


if __name__ == "__main__":
    main()
