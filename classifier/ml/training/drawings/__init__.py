"""Real drawings made by people, read from the shared data sets as ink (classifier.ml.ink).

Each reader keeps who drew what (a writer's digits look alike, so validation splits by writer,
never by drawing) and names its licence; docs/model.md credits them.
"""
