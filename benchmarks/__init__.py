"""The benchmarks: each runnable module measures one thing, run from the checkout's root as

    .venv/bin/python -m benchmarks.NAME --help

(load, ink_accuracy, number_accuracy, real_drawings, canvas_accuracy, not_a_digit,
inference_speed, train_speed, retrain_speed, finetune_recipes, feedback_loop, direct_server).
The options they share, with their defaults, are in `benchmarks.options`; what the figures mean is
in docs/performance.md, docs/model.md and docs/feedback.md.

The service never imports this package (an import contract in pyproject.toml), and it is not
installed with it: benchmarks import the service, not the other way round.
"""
