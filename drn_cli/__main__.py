"""``python -m drn_cli`` (also what ``torchrun -m drn_cli train ...`` runs)."""

from .cli import entry_point

entry_point()
