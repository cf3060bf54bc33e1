"""Demo and R&D only: the bundled sample data, an embedded PostgreSQL, the tiny model and the
one-command local loop (`make demo`). Never imported by a Lambda or the training image, and not
packaged into them (infra/packaging.py leaves this folder out)."""
