"""Discord integration for dspy-tokens (see the discord issue); installed with ``pip install dspy-tokens[discord]``."""
