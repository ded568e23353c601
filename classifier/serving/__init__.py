"""The serving path: the websocket consumer and its protocol, and the worker's side of Celery.

Web process: `routing` → `consumers` (frame checks from `protocol`, per-client `limits`, worker
`presence`) → `enqueue` (the request queued by task name). Worker process: `tasks` (the batched
task, start and stop) → `worker` (the model held for the process) → `batch` (one model call per
batch) → answers through classifier.transport.replies.
"""
