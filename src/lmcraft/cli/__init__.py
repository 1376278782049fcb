"""The ``lmcraft`` command. Each subcommand is one stage of the process and writes a plain directory:
``parser.py`` declares the arguments, ``commands.py`` runs them."""

from __future__ import annotations

import sys
import warnings

from lmcraft.cli.parser import build_parser
from lmcraft.data.builtin import MissingPackageError
from lmcraft.data.errors import DataError, DataWarning
from lmcraft.train.errors import NonFiniteLossError

__all__ = ["build_parser", "main"]


def _end_distributed() -> None:
    """Leave the process group cleanly when torchrun started one."""
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """An input file's warnings as one line, like the errors; any other warning as Python writes it."""
    if issubclass(category, DataWarning):
        return f"lmcraft: warning: {message}\n"
    return _python_format(message, category, filename, lineno, line)


_python_format = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        # A group without its action (e.g. `lmcraft data`) prints that group's help.
        chosen = {"data": "data", "tokenizer": "tokenizer"}.get(args.command or "")
        if chosen:
            parser.parse_args([chosen, "--help"])
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (DataError, MissingPackageError, FileNotFoundError, ValueError, KeyError, NonFiniteLossError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"lmcraft: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"lmcraft: {e.args[0] if e.args else 'interrupted'}", file=sys.stderr)
        return 130
    finally:
        _end_distributed()
