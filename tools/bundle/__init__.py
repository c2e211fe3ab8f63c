"""The offline bundle for a GPU node without internet: ``python -m tools.bundle.make_bundle`` (``make bundle``).

The other modules are also the bundle's scripts: they are copied to its top level and run there as scripts
(``job.py`` imports ``pack`` as its neighbour), with the standard library (and numpy/Pillow for ``cifar10_npz``).
"""
