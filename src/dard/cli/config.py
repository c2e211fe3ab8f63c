"""`dard config show`: a run config (a file, a packaged name, a run folder or the defaults) with every key."""

from __future__ import annotations

import argparse
import sys

from dard.cli.common import add_set_arg

__all__ = ["HELP", "add_arguments", "run"]

HELP = "show a run config with every key (dard config show)"


def add_arguments(c: argparse.ArgumentParser) -> None:
    """`dard config`'s options."""
    c.add_argument("action", choices=["show"], help="show: print the resolved config as commented YAML")
    c.add_argument(
        "source", nargs="?", help="a config file, a packaged config's name or a run folder (default: the defaults)"
    )
    add_set_arg(c, "override a config value before showing it (repeatable)")


def run(args: argparse.Namespace) -> int:
    """Print the resolved config as commented YAML (a run folder: what it recorded, with --set applied)."""
    from dard.config import RunConfig, apply_overrides, load_config, parse_config
    from dard.config.read import build_method
    from dard.config.show import show_config
    from dard.run_dir import RunDir
    from dard.training.preflight import check_config, check_names
    from dard.training.setup import at_key

    folder = RunDir(args.source) if args.source else None
    if folder is not None and folder.path.is_dir() and folder.config.is_file():  # a run folder: what it recorded
        data = folder.read_config()
        apply_overrides(data, args.overrides, schema=RunConfig)
        cfg = parse_config(data)
        check_names(cfg)  # as dard train checks them first
        method = at_key("method", lambda: build_method(cfg))  # its error named as dard train names it
    else:
        cfg = load_config(args.source, args.overrides)
        # every check dard train makes before the data loads, the teacher rules aside (a config may leave the teacher
        # out): a subset larger than the digits, a warm-up past the last epoch, were shown as a valid config
        method = check_config(cfg, teacher=False).method
    sys.stdout.write(show_config(cfg, method.config(), args.source))
    return 0
