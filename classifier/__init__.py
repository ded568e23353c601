"""Handwritten-digit recognition: the ML core and the service around it.

- `classifier.ml`: the model, its data, training and inference, in plain PyTorch.
- `classifier.serving`: the websocket consumer, the protocol, the Celery task and the worker.
- `classifier.transport`: where the service overrides library internals (kombu, celery-batches,
  channels_redis) to take round trips out of every request.
- `classifier.corrections`: the users' corrections, a Django app of its own (label
  `corrections`): the table, its admin, the store, and the commands that review and retrain.
"""
