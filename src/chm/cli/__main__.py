"""``python -m chm.cli``: the same as the ``chm`` console script."""

from chm.cli import app

app()
