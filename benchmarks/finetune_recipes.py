"""Fine-tuning recipes side by side: what each costs on MNIST and gains on writers it never saw.

    .venv/bin/python -m benchmarks.finetune_recipes \
        --recipes '[{"distill": 0, "freeze_norm": false, "correction_share": 0.25}, {}]'

The writers are those of benchmarks.feedback_loop (the same seeded hands and drawings), but
the service is left out: the drawings are preprocessed in-process and the candidates fine-tuned
with `classifier.ml.training.finetune` directly, so each recipe costs one fine-tuning run.
Writers 1..W draw every digit `--per-digit` times: their drawings are the corrections, split into
training and held-out ones as `retrain` splits them. Writers W+1..W+O are the others, scored only.

Each recipe is a JSON object of FinetuneConfig fields (`{}`: retrain's defaults). Every trained
candidate is also blended back towards the served weights at each `--blends` share (a blend
costs an evaluation, not a run). One line per candidate: MNIST test, MNIST validation, held-out
corrections and the others' accuracy, and whether `retrain`'s promotion rule would promote it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys
import time

import numpy as np
import torch

from benchmarks import feedback_loop, options
from classifier.ml.model import build_model
from classifier.ml.preprocessing import preprocess
from classifier.ml.training.data import Split, load_mnist
from classifier.ml.training.finetune import (
    FinetuneConfig,
    Scores,
    blend_weights,
    finetune,
    gate,
    is_held_out,
)
from classifier.ml.training.train import evaluate_model
from classifier.ml.weights import config_from_metadata, load_weights


def drawings(writers: range, per_digit: int, seed: int) -> Split:
    """The writers' drawings as the worker sees them (28x28), with the digits they meant."""
    found = feedback_loop.drawings_of(writers, per_digit, seed)
    images = [preprocess(base64.b64decode(d.url.split(",", 1)[1])) for d in found]
    labels = [d.digit for d in found]
    return Split(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long))


def main() -> int:
    parser = options.parser(__doc__)
    parser.add_argument(
        "--recipes", default="[{}]", help="JSON list of FinetuneConfig overrides (default: [{}])"
    )
    parser.add_argument(
        "--blends",
        default="0.5,0.75,1",
        help="shares of the fine-tuned weights to score each candidate at (default: 0.5,0.75,1)",
    )
    options.add_writers(parser)
    options.add_seed(parser, what="writers' seed")
    options.add_threads(parser, 2)
    options.add_weights(parser, "the served model")
    options.add_data_dir(parser, "where MNIST is, as <dir>/MNIST/raw/")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    corrections = drawings(range(1, args.writers + 1), args.per_digit, args.seed)
    others = drawings(
        range(args.writers + 1, args.writers + args.others + 1), args.per_digit, args.seed
    )
    # Hashed as classifier.corrections.store.image_hash hashes a stored correction's 28x28 image.
    held = torch.tensor(
        [is_held_out(hashlib.sha256(x.numpy().tobytes()).hexdigest()) for x in corrections.images]
    )
    train = Split(corrections.images[~held], corrections.labels[~held])
    held_out = Split(corrections.images[held], corrections.labels[held])
    data = load_mnist(args.data_dir, download=False)
    state, metadata = load_weights(args.weights)
    model_config = config_from_metadata(metadata)

    def score(weights: dict[str, torch.Tensor]) -> tuple[Scores, float, float]:
        model = build_model(model_config)
        model.load_state_dict(weights)
        test, validation, held_acc, others_acc = (
            evaluate_model(model, split, "cpu").accuracy
            for split in (data.test, data.validation, held_out, others)
        )
        return Scores(test, held_acc), validation, others_acc

    def line(name: str, scores: Scores, validation: float, others_acc: float, note: str) -> str:
        assert scores.held_out is not None  # each model is scored on the held-out corrections
        return (
            f"{name:<58} MNIST test {100 * scores.mnist_test:.2f}%  validation "
            f"{100 * validation:.2f}%  held-out {100 * scores.held_out:.2f}%  others "
            f"{100 * others_acc:.2f}%  {note}"
        )

    served, served_validation, served_others = score(state)
    print(
        f"{len(train)} corrections train, {len(held_out)} held out, {len(others)} others' drawings"
    )
    print(line("served", served, served_validation, served_others, ""))
    for recipe in json.loads(args.recipes):
        config = FinetuneConfig(threads=args.threads, **recipe)
        started = time.perf_counter()
        tuned = finetune(state, model_config, data.train, train, config).model.state_dict()
        seconds = time.perf_counter() - started
        for share in (float(b) for b in args.blends.split(",")):
            scores, validation, others_acc = score(blend_weights(state, tuned, share))
            decision = gate(scores, served, len(train), len(held_out))
            note = f"{'promote' if decision.promote else 'keep'} ({seconds:.0f} s to train)"
            name = f"{json.dumps(recipe, sort_keys=True)} blend {share:g}"
            print(line(name, scores, validation, others_acc, note), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
