"""The corrections store: a Django app of its own (label `corrections`).

`models` holds the table, `store` the one code that writes and reads it, `admin` the review pages,
`judging` how a new model is scored on the accepted corrections, and management/commands
`feedback`, `retrain` and `models`. It imports the ML core (classifier.ml) and Django, never the
serving side; the inference worker (classifier.serving.batch) imports `store`.
"""
