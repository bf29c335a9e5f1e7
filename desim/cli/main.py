"""The ``desim`` command: a thin layer over the library (parse, call, print).

Every :class:`~desim.errors.DesimError` becomes one ``error:`` line on stderr and its exit code,
and every usage error one line and exit 2 (README "Exit codes"); no traceback reaches the user.
Set ``DESIM_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated

import typer

from desim import __version__
from desim.cli.bench import bench_app
from desim.cli.consoles import err
from desim.cli.figures import figures
from desim.cli.profile import profile
from desim.cli.run import list_allocators, run
from desim.cli.sweep import sweep
from desim.cli.traces import traces_app
from desim.errors import DesimError, DesimWarning, Interrupted

app = typer.Typer(
    help="desim: discrete-event simulator of device-edge cooperative fine-tuning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(bench_app, name="bench")
app.add_typer(traces_app, name="traces")
# the commands, in the order `desim --help` lists them
app.command()(sweep)
app.command()(run)
app.command("allocators")(list_allocators)
app.command()(figures)
app.command()(profile)


def _version(value: bool) -> None:
    if value:
        print(f"desim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """desim: discrete-event simulator of device-edge cooperative fine-tuning."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and return its exit code (README "Exit codes").

    0 success; 2 bad input or usage (one ``error:`` line, with typer's "Did you mean" hint); 3
    cannot proceed; 130 interrupted (Ctrl-C); 1 a bug (``internal error``, or the traceback
    with ``DESIM_DEBUG=1``). Each :class:`~desim.errors.DesimWarning` is one ``warning:`` line.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("default", DesimWarning)
        warnings.showwarning = _show_warning
        try:
            code = app(args=argv, prog_name="desim", standalone_mode=False)
        except Interrupted as exc:
            _error(str(exc), prefix="interrupted: ")
            return exc.exit_code
        except DesimError as exc:
            _error(str(exc))
            return exc.exit_code
        except typer.TyperException as exc:  # usage: unknown option or command, bad value
            return _usage_error(exc)
        except (KeyboardInterrupt, typer.Abort):
            _error("interrupted", prefix="")
            return 130
        except Exception as exc:  # a bug: still no raw traceback unless asked for
            if os.environ.get("DESIM_DEBUG"):
                raise
            _error(f"internal error: {type(exc).__name__}: {exc} (set DESIM_DEBUG=1 for a "
                   "traceback)", prefix="")
            return 1
    # typer returns the code of a typer.Exit (130 for a Ctrl-C inside a command), else None
    if code == 130:
        _error("interrupted", prefix="")
    return code if isinstance(code, int) else 0


def _error(message: str, prefix: str = "error: ") -> None:
    """One line on stderr, printed verbatim: user text is never read as rich markup."""
    err.print(f"{prefix}{message}", markup=False, highlight=False, soft_wrap=True)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    if issubclass(category, DesimWarning):
        _error(str(message), prefix="warning: ")
    else:  # a library's own warning: Python's usual format
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _usage_error(exc: typer.TyperException) -> int:
    """A usage error as one line and exit 2; no arguments at all also shows the help above."""
    ctx = getattr(exc, "ctx", None)
    message = exc.format_message()
    if not message:  # no arguments: typer has printed the help
        _error("missing command: choose one of the commands listed above")
        return 2
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    _error(message + hint)
    return 2


if __name__ == "__main__":
    sys.exit(main())
