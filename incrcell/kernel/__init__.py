"""Everything of incrcell that touches IPython, ipykernel or comm (the rest is the core).

- :mod:`~incrcell.kernel.extension`: the composition root, one per shell; load and unload;
- :mod:`~incrcell.kernel.hooks`: runs the engine around every cell;
- :mod:`~incrcell.kernel.outputs`: records a cell's outputs and replays them;
- :mod:`~incrcell.kernel.magics`: ``%incrcell`` and ``%%incrcell``;
- :mod:`~incrcell.kernel.comm`: the JupyterLab sidebar's comm.
"""
