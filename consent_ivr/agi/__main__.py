"""`python -m consent_ivr.agi [-c CONFIG] [--listen HOST:PORT] ...`: the FastAGI server."""

from __future__ import annotations

import argparse
import sys

from consent_ivr import logs
from consent_ivr.agi.cli import add_arguments, cmd_agi
from consent_ivr.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m consent_ivr.agi", description=__doc__)
    p.add_argument("-c", "--config", help="config file (default: config.yaml)")
    add_arguments(p)
    args = p.parse_args(argv)
    logs.setup()
    try:
        return cmd_agi(args)
    except ConfigError as e:
        print(f"consent-ivr: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
