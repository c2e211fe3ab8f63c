"""Project tools that are not part of the dard package (run from the checkout's root: ``python -m tools.NAME``)."""
