"""`python -m gitops_localstack up|down|status [--root DIR]`: what `make up` and `make down` run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gitops_localstack import processes, stack


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one stack action; exit 1 with a message if the stack fails."""
    parser = argparse.ArgumentParser(
        prog="python -m gitops_localstack", description="Start or stop the real local stack."
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="repository root (default: current directory)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the running stack keeps its state (default: ROOT/.local)",
    )
    args = parser.parse_args(argv)
    paths = stack.StackPaths(
        args.root.resolve(), args.state_dir.resolve() if args.state_dir else None
    )
    try:
        if args.action == "up":
            stack.up(paths)
        elif args.action == "down":
            stack.down(paths)
        else:
            alive = stack.running(paths)
            print("running" if alive else "not running")
            return 0 if alive else 3
    except processes.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
