"""Time `manage.py retrain` with 10,000 accepted corrections, as a user would run it.

    .venv/bin/python benchmarks/retrain_speed.py [--corrections 10000] [-- RETRAIN ARGS]

Makes a temporary SQLite database (DATABASE_URL), migrates it with the real command, stores
`--corrections` drawings of the project's stroke templates (random variant, size, place and
slant, drawn as on the canvas and preprocessed as the service does) through `save_correction`,
accepts them all, then runs the real `retrain --json` on a temporary copy of the served weights
(so the shipped file is never touched) and prints its wall time, the outcome and the machine's
load: the 2-core CPU is often shared, and a busy machine trains slower. Target: 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.paths import DEFAULT_DATA_DIR  # noqa: E402 - after the path set-up

TARGET_S = 300.0
# Canvas size of the generated drawings: preprocessing scales them to 20 px anyway, and a small
# canvas draws 10,000 of them in seconds.
CANVAS = 128


def store_corrections(count: int, seed: int) -> int:
    """Draw, preprocess, store and accept `count` distinct template digits; returns how many."""
    import django

    django.setup()
    import numpy as np
    from django.db import transaction

    from classifier import corrections
    from classifier.ml.canvas import render_template_png
    from classifier.ml.preprocessing import preprocess
    from classifier.models import Status

    rng = np.random.default_rng(seed)
    stored = 0
    with transaction.atomic():
        while stored < count:
            digit = stored % 10
            png = render_template_png(digit, rng=rng, size=CANVAS)
            _, created = corrections.save_correction(
                image=png,
                media_type="image/png",
                image28=preprocess(png),
                label=digit,
                predicted=digit,
                confidence=0.9,
                probabilities=[0.1] * 10,
                model_version="benchmark",
                client_predicted=None,
                client_model=None,
                client_hash="b" * 64,
            )
            stored += created
    corrections.set_status(None, Status.ACCEPTED)
    return stored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corrections", type=int, default=10_000, help="(default: 10000)")
    parser.add_argument("--seed", type=int, default=1, help="drawings' seed (default: 1)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DIGITS_DATA_DIR") or DEFAULT_DATA_DIR),
        help=f"MNIST (default: DIGITS_DATA_DIR or {DEFAULT_DATA_DIR})",
    )
    parser.add_argument("retrain_args", nargs="*", help="more `retrain` options, after --")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="digits-retrain-") as tmp:
        folder = Path(tmp)
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{folder / 'corrections.sqlite3'}",
            "DIGITS_DATA_DIR": str(args.data_dir),
            "DJANGO_SETTINGS_MODULE": "digits_site.settings",
        }
        os.environ.update(env)
        sys.path.insert(0, str(ROOT))
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        started = time.perf_counter()
        stored = store_corrections(args.corrections, args.seed)
        print(
            f"stored and accepted {stored:,} corrections in {time.perf_counter() - started:.1f} s"
        )

        from django.conf import settings

        weights = folder / "served" / Path(settings.DIGITS_WEIGHTS).name
        weights.parent.mkdir()
        shutil.copy(settings.DIGITS_WEIGHTS, weights)
        command = [
            sys.executable,
            "manage.py",
            "retrain",
            "--json",
            "--weights",
            str(weights),
            *args.retrain_args,
        ]
        print("$ " + " ".join(command[1:]), flush=True)
        started = time.perf_counter()
        # Streamed, so the progress lines show as they come.
        last = ""
        with subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                last = line if line.strip() else last
        seconds = time.perf_counter() - started
        if process.returncode:
            return process.returncode
        outcome = json.loads(last)
    load = os.getloadavg()
    print(
        f"retrain with {stored:,} accepted corrections: {seconds:.1f} s "
        f"(target {TARGET_S:.0f} s: {'met' if seconds <= TARGET_S else 'MISSED'}); "
        f"promoted: {outcome['promoted']}; {os.cpu_count()} CPUs, "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
