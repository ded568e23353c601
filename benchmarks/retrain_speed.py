"""Time `manage.py retrain` with 10,000 accepted corrections, as a user would run it.

    .venv/bin/python -m benchmarks.retrain_speed [--corrections 10000] [-- RETRAIN ARGS]

Makes a temporary SQLite database (DATABASE_URL), migrates it with the real command, stores
`--corrections` drawings of the project's stroke templates (random variant, size, place and
slant, drawn as on the canvas and preprocessed as the service does) through `save_correction`,
accepts them all, then runs the real `retrain --json` on a temporary copy of the served weights
(so the shipped file is never touched) and prints its wall time, the outcome and the machine's
load: the 2-core CPU is often shared, and a busy machine trains slower. Target: 5 minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import options

TARGET_S = 300.0
# Canvas size of the generated drawings: preprocessing scales them to 20 px anyway, and a small
# canvas draws 10,000 of them in seconds.
CANVAS = 128


def store_corrections(count: int, seed: int) -> int:
    """Draw, preprocess, store and accept `count` distinct template digits; returns how many."""
    options.setup_django()
    import numpy as np
    from django.db import transaction

    from classifier.corrections import store as corrections
    from classifier.corrections.models import Status
    from classifier.ml.preprocessing import preprocess
    from classifier.ml.training.canvas import render_template_png

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
    parser = options.parser(__doc__)
    parser.add_argument(
        "--corrections", type=int, default=10_000, help="accepted corrections (default: 10000)"
    )
    options.add_seed(parser, 1, "drawings' seed")
    options.add_data_dir(parser, "MNIST directory, retrain's DIGITS_DATA_DIR")
    parser.add_argument(
        "retrain_args", nargs="*", help="more `retrain` options, after -- (default: none)"
    )
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
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=options.ROOT,
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
            command, cwd=options.ROOT, env=env, stdout=subprocess.PIPE, text=True
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
