"""``fednode demo``: a whole federation on one machine, from ``seeds/``."""
