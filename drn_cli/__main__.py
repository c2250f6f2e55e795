"""``python -m drn_cli`` (also what ``torchrun -m drn_cli train ...`` runs)."""

from ._entry import run

run()
