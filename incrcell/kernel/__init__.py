"""Everything of incrcell that touches IPython, ipykernel or comm (the rest is the core)."""
