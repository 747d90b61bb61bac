"""``python -m dspy_tokens``: the ``dspy-tokens`` command line."""

from .cli import main

main(prog_name="dspy-tokens")
