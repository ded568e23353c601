"""Time a full `manage.py train` run to the target accuracy, as a user would run it.

    .venv/bin/python -m benchmarks.train_speed [--device auto] [--target 0.995] [-- TRAIN ARGS]

Runs the real command (default options unless more are given after `--`) into a temporary
directory, so the shipped weights are never touched, and prints wall time, training time, images
per second, test accuracy, the device, torch's thread count and the machine's load: the CPU is
often shared, and a busy machine trains slower.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import options


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = options.parser(__doc__)
    options.add_device(parser, "auto")
    options.add_data_dir(parser)
    parser.add_argument(
        "--target", type=float, default=0.995, help="test accuracy to reach (default: 0.995)"
    )
    parser.add_argument(
        "--limit-s",
        type=float,
        default=None,
        help="time limit to judge against (default: 300 on the CPU, 15 on CUDA)",
    )
    parser.add_argument(
        "train_args", nargs="*", help="more `manage.py train` options, after -- (default: none)"
    )
    args = parser.parse_args()

    import torch  # after argument parsing: --help stays fast

    with tempfile.TemporaryDirectory(prefix="digits-bench-") as folder:
        output = Path(folder) / "bench.safetensors"
        command = [
            sys.executable,
            str(options.ROOT / "manage.py"),
            "train",
            "--device",
            args.device,
            "--data-dir",
            str(args.data_dir),
            "--output",
            str(output),
            "--no-progress",
            *args.train_args,
        ]
        load_before = os.getloadavg()
        started = time.perf_counter()
        finished = subprocess.run(command, cwd=options.ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - started
        load_after = os.getloadavg()
        if finished.returncode != 0:
            print(finished.stdout, finished.stderr, sep="\n", file=sys.stderr)
            return finished.returncode
        report = json.loads((Path(folder) / "bench.report.json").read_text())

    device = report["device"]
    limit = args.limit_s or (15.0 if device.startswith("cuda") else 300.0)
    history = report["history"]
    images = sum(h["images_per_s"] * h["seconds"] for h in history)
    train_time = sum(h["seconds"] for h in history)
    accuracy = report["test"]["accuracy"]
    print(f"command        : manage.py train {' '.join(command[3:])}")
    chip = torch.cuda.get_device_name(0) if device.startswith("cuda") else cpu_name()
    threads = torch.get_num_threads()
    print(f"device         : {device} ({chip})")
    print(f"torch          : {torch.__version__}, {threads} CPU threads, {os.cpu_count()} cores")
    print(f"load average   : {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min)")
    print(f"epochs         : {len(history)} (best {report['best_epoch']})")
    print(f"wall time      : {wall:.1f} s (whole command: start-up, data, training, test, saving)")
    print(
        f"training time  : {report['train_seconds']:.1f} s ({train_time:.1f} s in training steps)"
    )
    print(f"images/s       : {images / max(train_time, 1e-9):.0f} (training, with augmentation)")
    print(f"test accuracy  : {100 * accuracy:.2f}%")
    verdict = "yes" if accuracy >= args.target and wall <= limit else "no"
    print(f"target reached : {verdict} ({100 * args.target:.1f}% within {limit:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
