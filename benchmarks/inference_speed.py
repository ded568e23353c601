"""How fast one worker process can go: the model at several batch sizes, and the preprocessing.

    .venv/bin/python -m benchmarks.inference_speed [--device all] [--batches 1,8,64,256,1024]

For each device (the CPU, and CUDA when there is one) it prints the model's images/s at each
batch size, three ways: `eager` is the model as trained (batch norm separate, NCHW); `served` is
what the workers run (`Predictor`: batch norm folded into the convolutions, channels-last; the
time includes copying the batch to the device and the probabilities back); on CUDA also `bf16`,
the served model under bf16 autocast, which the workers do not use unless these figures say it
pays. Then the decode + preprocess rate of canvas PNGs as the page sends them, and the
in-process limit: decode + preprocess + model at the worker's batch size, the ceiling a worker
could reach with no serving overhead at all (benchmarks.load compares the service with it).

CPU figures use the worker's thread count (DIGITS_TORCH_THREADS). Each figure is the median of
`--repeats` timed runs of about `--seconds`; on a machine shared with other work, compare
figures from the same run only.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from django.conf import settings

from benchmarks import options
from benchmarks.load_drawings import make_images
from benchmarks.load_phases import in_process_limit
from benchmarks.load_report import machine_line
from classifier.ml.inference import Predictor
from classifier.ml.input import IMAGE_SIZE
from classifier.ml.model import build_model, normalize
from classifier.ml.weights import config_from_metadata, load_weights
from classifier.serving.batch import prepare_batch


def rate(
    run: Callable[[], object], items: int, seconds: float, repeats: int, sync: Callable
) -> float:
    """Median items/s over `repeats` runs of about `seconds` each (after one untimed call)."""
    run()
    sync()
    rates = []
    for _ in range(repeats):
        calls = 0
        started = time.perf_counter()
        while True:
            run()
            calls += 1
            if calls % 4 == 0 or items >= 64:
                sync()
                if time.perf_counter() - started >= seconds:
                    break
        rates.append(calls * items / (time.perf_counter() - started))
    return statistics.median(rates)


def eager_model(weights: Path, device: torch.device) -> torch.nn.Module:
    """The model as training leaves it (with its detector head, if it has one): no folding,
    default memory layout."""
    state_dict, metadata = load_weights(weights)
    model = build_model(config_from_metadata(metadata))
    model.load_state_dict(state_dict)
    return model.to(device).eval()


def model_figures(
    device: torch.device, batches: list[int], seconds: float, repeats: int, images: np.ndarray
) -> None:
    predictor = Predictor.load(settings.DIGITS_WEIGHTS, device=str(device))
    predictor.warm_up()
    eager = eager_model(settings.DIGITS_WEIGHTS, device)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    served_bf16 = copy.deepcopy(predictor.model) if cuda else None
    print(f"  {'batch':>6} {'eager':>10} {'served':>10}" + (f" {'bf16':>10}" if cuda else "")
          + "   images/s")  # fmt: skip
    for batch in batches:
        picked = np.resize(images, (batch, IMAGE_SIZE, IMAGE_SIZE))
        on_device = normalize(torch.from_numpy(picked).to(device))

        @torch.inference_mode()
        def run_eager(x: torch.Tensor = on_device) -> torch.Tensor:
            return eager(x)

        @torch.inference_mode()
        def run_bf16(x: torch.Tensor = on_device) -> torch.Tensor:
            assert served_bf16 is not None  # on CUDA only
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return served_bf16(x.contiguous(memory_format=torch.channels_last))

        def run_served(p: np.ndarray = picked) -> np.ndarray:
            return predictor.predict_proba(p)

        figures = [
            rate(run_eager, batch, seconds, repeats, sync),
            rate(run_served, batch, seconds, repeats, sync),
        ]
        if cuda:
            figures.append(rate(run_bf16, batch, seconds, repeats, sync))
        print(f"  {batch:>6} " + " ".join(f"{f:>10.0f}" for f in figures))


def main() -> int:
    options.setup_django()
    parser = options.parser(__doc__)
    options.add_device(parser, "all", "cpu, cuda, or all (the CPU, and CUDA when present)")
    parser.add_argument(
        "--batches",
        default="1,8,64,256,1024",
        help="model batch sizes, comma-separated (default: 1,8,64,256,1024)",
    )
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="seconds per timed run (default: 1)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (default: 3)")
    parser.add_argument(
        "--images", type=int, default=256, help="canvas PNGs to preprocess (default: 256)"
    )
    options.add_data_dir(parser)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.device == "all":
        devices = [torch.device("cpu")]
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
    else:
        devices = [torch.device(args.device)]
    if settings.DIGITS_TORCH_THREADS > 0:
        torch.set_num_threads(settings.DIGITS_TORCH_THREADS)

    canvases, source = make_images(args.images, 0, args.data_dir)
    payloads = [url.split(",", 1)[1] for url in canvases.urls]
    prepared = prepare_batch(payloads)
    images = np.stack([p.image for p in prepared if p.image is not None])
    print(f"Machine: {machine_line()}; load average {os.getloadavg()[0]:.2f}")
    print(f"Images: {len(payloads)} {source}")

    batch = settings.DIGITS_BATCH_SIZE
    for threads in (1, 2, 4):
        with ThreadPoolExecutor(threads) if threads > 1 else contextlib.nullcontext() as pool:

            def prepare_all(pool: ThreadPoolExecutor | None = pool) -> None:
                for start in range(0, len(payloads), batch):
                    prepare_batch(payloads[start : start + batch], pool)

            per_image = rate(prepare_all, len(payloads), args.seconds, args.repeats, lambda: None)
        print(
            f"decode + preprocess (the worker's prepare_batch, batches of {batch}) on "
            f"{threads} thread{'s' if threads > 1 else ''}: {per_image:.0f} images/s"
        )

    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"\nModel on {device} ({name}):")
        model_figures(device, batches, args.seconds, args.repeats, images)
        limit, batch = in_process_limit(canvases, args.seconds * args.repeats, str(device))
        print(
            f"In-process limit on {device} (decode + preprocess + model, batches of {batch}): "
            f"{limit:.0f} images/s"
        )
    if not torch.cuda.is_available():
        print("\nNo CUDA device here: GPU figures not measured.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
