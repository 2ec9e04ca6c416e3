"""``xcca.loki.utils``: LOKI's ``loki.utils`` import path (``postproc_helper``; ``postproc_legendre`` below)."""
