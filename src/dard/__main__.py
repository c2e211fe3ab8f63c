"""Allow `python -m dard ...` (and `torchrun -m dard ...`)."""

from dard.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
