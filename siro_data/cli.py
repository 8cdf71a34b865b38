"""The ``siro-data`` command: argument parsing and a summary over :func:`fetch_all`,
:func:`sync`, :func:`verify` and :func:`prune`, nothing more.

Every way a command ends is one of :data:`EXIT_CODES`, said in one sentence on
stderr when it is not success (the traceback only with ``-v``): a scheduler
reads the code and knows whether to retry later or to call someone.

Progress (``--progress``): tqdm bars when stderr is a terminal, else one plain
log line every 10 s, as :func:`siro_data.fetch_all` chooses them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pandas as pd

from ._version import __version__
from .api import fetch_all
from .archive import listing_path, location
from .exceptions import AuthError, LocalFileError, SiroAPIError
from .progress import LOG_INTERVAL_SECONDS, LogProgress, Reporter, reporter_for
from .retention import prune
from .rows import UNAVAILABLE_KINDS, Status
from .summary import summarize
from .sync import DEFAULT_OVERLAP, DEFAULT_RETRY_FOR, sync
from .tokens import MINTER_ENV, TOKEN_ENV
from .verify import verify

EXIT_OK, EXIT_SOME_FAILED, EXIT_SETUP, EXIT_UNAVAILABLE = 0, 1, 2, 3
EXIT_BUG, EXIT_INTERRUPTED = 70, 130

#: What each exit status means, and what a pipeline should do with it.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done: every recording this run tried is complete",
    EXIT_SOME_FAILED: "some recordings failed (the manifest says why): retry later, "
    "the next run asks again those a retry may cure",
    EXIT_SETUP: "fix the setup: bad arguments, no token or a refused one, a file or folder "
    "that cannot be read or written; retrying as it is will fail the same way",
    EXIT_UNAVAILABLE: "Siro's API or the network did not answer after the retries: "
    "retry later, nothing finished is lost",
    EXIT_BUG: "an error siro_data did not foresee (a bug): run again with -v and report "
    "the traceback",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGINT): run again to resume",
}


def read_ids(path: Path, id_column: str) -> pd.DataFrame:
    """The id table from a CSV or parquet file; CSV ids are read as text (leading zeros kept)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype={id_column: str})
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise ValueError(f"{path}: expected a .csv or .parquet file of recording ids")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["emulator"]:  # its own switches, its own --help
        from .emulator.__main__ import main as emulator_main

        return emulator_main(argv[1:], prog="siro-data emulator")
    command_line = parser()
    args = command_line.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # its retry notices would drown the summary; failures still show
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        # portalocker warns of a lock file removed under its holder, as when a folder is deleted
        # under the run: the run's own sentence names that, once.
        logging.getLogger("portalocker").setLevel(logging.ERROR)
        logging.getLogger("siro_data.progress").setLevel(logging.INFO)  # the progress lines
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "sync":
            return _sync(args)
        if args.command == "verify":
            return _verify(args)
        if args.command == "prune":
            return _prune(args)
        ids = read_ids(args.ids, args.id_column)
        return _fetch(ids, args, id_column=args.id_column, api_url=args.api_url)
    except KeyboardInterrupt as exc:
        return _fail(EXIT_INTERRUPTED, str(exc) or "interrupted; run again to continue", exc)
    except AuthError as exc:
        kept = _kept(args)
        return _fail(EXIT_SETUP, f"authentication failed ({exc}): the run stopped; {kept}", exc)
    except SiroAPIError as exc:
        if exc.retry_later:
            sentence = f"Siro's API is unavailable ({exc}): run again later; {_kept(args)}"
            return _fail(EXIT_UNAVAILABLE, sentence, exc)
        return _fail(EXIT_SETUP, f"Siro's API refused the request ({exc}); {_kept(args)}", exc)
    except (ValueError, OSError) as exc:  # one sentence: the path and the cause
        return _fail(EXIT_SETUP, f"error: {_sentence(exc)}", exc)
    except Exception as exc:
        return _fail(EXIT_BUG, f"unexpected error: {type(exc).__name__}: {exc}", exc)


def _fail(code: int, sentence: str, error: BaseException) -> int:
    """Say why the command ends, in one line on stderr; the traceback goes to the debug log."""
    logging.getLogger(__name__).debug("what stopped the run", exc_info=error)  # with -v
    print(f"siro-data: {sentence}", file=sys.stderr)
    return code


def _kept(args: argparse.Namespace) -> str:
    return f"the rows finished are kept in {location(args.manifest)}"


def _sentence(error: Exception) -> str:
    """An error as one line: ours are sentences already; the system's say path and cause."""
    if isinstance(error, LocalFileError):  # mid-run
        return f"{error}; the run stopped, finished rows and partial files are kept"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error)


def _fetch(
    ids: pd.DataFrame,
    args: argparse.Namespace,
    *,
    id_column: str = "recording_id",
    token: str | None = None,
    api_url: str | None = None,
) -> int:
    manifest = fetch_all(
        ids,
        id_column=id_column,
        out_dir=args.out_dir,
        manifest_path=args.manifest,
        token=token,
        api_url=api_url,
        workers=args.workers,
        requests_per_minute=args.requests_per_minute,
        progress=_reporter(args),
        overwrite=args.overwrite,
        convert_to=args.convert_to,
        storage_options=storage_options(args.storage_option),
    )
    print(summarize(manifest))
    print(f"manifest: {location(args.manifest)}")
    return exit_status(manifest)


#: Said before a sync with ``--prune``: what it removes, before it does.
PRUNE_LINE = (
    "--prune: removing the audio of the recordings Siro deleted, their WAV/FLAC copies and"
    " partial downloads; their rows stay as tombstones"
)


def _sync(args: argparse.Namespace) -> int:
    if args.prune:
        print(PRUNE_LINE, flush=True)
    synced = sync(
        args.manifest,
        args.out_dir,
        since=args.since,
        team_id=args.team_id,
        organization_id=args.organization_id,
        conversation_type=args.conversation_type,
        result=args.result,
        api_url=args.api_url,
        workers=args.workers,
        requests_per_minute=args.requests_per_minute,
        progress=_reporter(args),
        convert_to=args.convert_to,
        storage_options=storage_options(args.storage_option),
        overlap=pd.Timedelta(hours=args.overlap_hours),
        retry_for=pd.Timedelta(days=args.retry_days),
        reconcile=args.reconcile,
        prune=args.prune,
        keep=args.keep,
    )
    print(synced.summary())
    print(f"manifest: {location(args.manifest)}")
    print(f"listing: {listing_path(location(args.manifest))}")
    return exit_status(synced.tried)


def _verify(args: argparse.Namespace) -> int:
    report = verify(
        args.manifest,
        args.out_dir,
        repair=args.repair,
        delete_orphans=args.delete_orphans,
        workers=args.workers,
        progress=_reporter(args),
        storage_options=storage_options(args.storage_option),
    )
    print(report.summary())
    print(f"manifest: {location(args.manifest)}")
    return EXIT_OK if report.ok else EXIT_SOME_FAILED


def _prune(args: argparse.Namespace) -> int:
    print(
        f"removing the audio of the recordings created more than {args.older_than} ago", flush=True
    )
    removal = prune(
        args.manifest,
        args.out_dir,
        older_than=args.older_than,
        storage_options=storage_options(args.storage_option),
    )
    print(removal.summary())
    print(f"manifest: {location(args.manifest)}")
    return EXIT_OK


def exit_status(rows: pd.DataFrame) -> int:
    """0 when every row is ok (or a tombstone: deleted in Siro, expired); 3 when nothing got
    through and every failure was the API's (the API was unreachable); else 1 when some row
    failed.

    Examples
    --------
    >>> from siro_data.rows import to_frame
    >>> down = {"recording_id": "a", "error": "no answer from the API", "error_kind": "connection"}
    >>> exit_status(to_frame([down])), exit_status(to_frame([down, {"recording_id": "b"}]))
    (3, 1)
    """
    fine = rows["status"].isin([Status.OK, Status.DELETED, Status.EXPIRED])
    failed = rows[~fine.to_numpy(dtype=bool)]
    if failed.empty:
        return EXIT_OK
    if len(failed) == len(rows) and failed["error_kind"].isin(UNAVAILABLE_KINDS).all():
        return EXIT_UNAVAILABLE
    return EXIT_SOME_FAILED


def storage_options(pairs: Sequence[str]) -> dict[str, object] | None:
    """``--storage-option KEY=VALUE`` pairs as fsspec's options (values read as JSON when
    they are: numbers, booleans; else kept as text).

    Examples
    --------
    >>> storage_options(["endpoint_url=http://127.0.0.1:9000", "anon=true"])
    {'endpoint_url': 'http://127.0.0.1:9000', 'anon': True}
    """
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options or None


def _reporter(args: argparse.Namespace) -> Reporter:
    """What ``--progress`` (and ``--quiet``, ``--log-interval``) ask for."""
    choice = "none" if args.quiet else args.progress
    reporter = reporter_for(choice, location(args.manifest))
    if isinstance(reporter, LogProgress):
        reporter.interval = args.log_interval
    return reporter


def _demo(args: argparse.Namespace) -> int:
    """Start the emulator and run the whole job on its sample recordings: no token, no network."""
    from .emulator import Emulator

    with Emulator() as emulator:
        print(f"emulator at {emulator.api_url} with {len(emulator.recordings)} sample recordings")
        ids = pd.DataFrame({"recording_id": list(emulator.recordings)})
        return _fetch(ids, args, token=emulator.token, api_url=emulator.api_url)


_TOKEN_TEXT = (
    f"The token comes from ${TOKEN_ENV}, else is minted as needed from "
    f"${', $'.join(MINTER_ENV.values())}."
)
_EXIT_TEXT = "exit status:\n\n" + "\n".join(  # a definition list, for the docs' reference too
    f"{code}\n{textwrap.fill(meaning, 79, initial_indent=' ' * 4, subsequent_indent=' ' * 4)}"
    for code, meaning in EXIT_CODES.items()
)


_VERIFY_EXIT_TEXT = "exit status:\n\n" + "\n".join(
    f"{code}\n{textwrap.fill(meaning, 79, initial_indent=' ' * 4, subsequent_indent=' ' * 4)}"
    for code, meaning in {
        EXIT_OK: "every complete row's file is whole; no leftover, no orphan",
        EXIT_SOME_FAILED: "something is wrong (even if repaired): the lines above say what",
        EXIT_SETUP: "no manifest there, bad arguments, a file that cannot be read",
        EXIT_BUG: EXIT_CODES[EXIT_BUG],
        EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGINT): run again",
    }.items()
)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line on stderr like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_SETUP, f"siro-data: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    """The `siro-data` command's parser (the docs' command-line reference is written from it)."""
    top = _Parser(
        prog="siro-data",
        description="Fetch Siro call-recording audio to disk, with a parquet manifest.",
    )
    top.add_argument("--version", action="version", version=f"siro-data {__version__}")
    commands = top.add_subparsers(dest="command", required=True)

    places = _Parser(add_help=False)  # every command's: where the archive is, what it shows
    places.add_argument("--out-dir", default="data/recordings", help="where audio files go")
    places.add_argument("--manifest", default="data/manifest.parquet", help="manifest path")
    common = _Parser(add_help=False, parents=[places])  # the commands that fetch
    common.add_argument("--workers", type=int, default=16, help="recordings in flight at once")
    common.add_argument(
        "--requests-per-minute",
        type=int,
        default=1000,
        help="API pace; Siro allows 1000 per token per minute (lower it to share a token)",
    )
    common.add_argument(
        "--convert-to",
        choices=["wav", "flac"],
        help="also write a WAV or FLAC copy of each recording (the audio_path column)",
    )
    shown = _Parser(add_help=False)
    shown.add_argument(
        "--progress",
        choices=["auto", "bars", "log", "none"],
        default="auto",
        help="tqdm bars, or one plain log line every --log-interval seconds"
        " (auto: bars on a terminal, log lines elsewhere)",
    )
    shown.add_argument(
        "--log-interval",
        type=float,
        default=LOG_INTERVAL_SECONDS,
        metavar="SECONDS",
        help="seconds between two progress lines (default: %(default)g)",
    )
    _storage_option(shown)
    shown.add_argument("--quiet", "-q", action="store_true", help="no progress: --progress none")
    shown.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    common = _Parser(add_help=False, parents=[common, shown])

    overwrite = _Parser(add_help=False)
    overwrite.add_argument("--overwrite", action="store_true", help="fetch complete rows again")

    fetch = commands.add_parser(
        "fetch",
        parents=[common, overwrite],
        help="fetch the recordings listed in a CSV or parquet file",
        description=textwrap.fill(f"Fetch recordings. {_TOKEN_TEXT}", 79),
        epilog=_EXIT_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("ids", type=Path, help="IDS.csv or IDS.parquet")
    fetch.add_argument("--id-column", default="recording_id", help="column holding the ids")
    fetch.add_argument("--api-url", default=None, help="default: $SIRO_API_URL or Siro's API")

    synced = commands.add_parser(
        "sync",
        parents=[common],
        help="fetch the recordings that appeared since the last sync (list, fetch, retry)",
        description=textwrap.fill(
            f"List the recordings created since the last sync (less an overlap), fetch those "
            f"not complete, retry failures a later run may cure; the watermark and the listing "
            f"are kept beside the manifest. {_TOKEN_TEXT}",
            79,
        ),
        epilog=_EXIT_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    synced.add_argument("--since", help="list from this date (needed by the first sync)")
    synced.add_argument("--team-id", nargs="+", help="only these teams (each listed apart)")
    synced.add_argument("--organization-id", help="only this organization")
    synced.add_argument("--conversation-type", nargs="+", help="only these conversation types")
    synced.add_argument("--result", help="only recordings with this result")
    synced.add_argument(
        "--overlap-hours",
        type=float,
        default=DEFAULT_OVERLAP / pd.Timedelta(hours=1),
        help="list again this far before the watermark: late recordings (default: %(default)g)",
    )
    synced.add_argument(
        "--retry-days",
        type=float,
        default=DEFAULT_RETRY_FOR / pd.Timedelta(days=1),
        help="retry curable failures of recordings younger than this (default: %(default)g)",
    )
    synced.add_argument(
        "--reconcile",
        action="store_true",
        help="list the whole history again and mark deleted the recordings Siro lists no more"
        " (a list call per 100 recordings; their audio stays unless --prune)",
    )
    synced.add_argument(
        "--prune",
        action="store_true",
        help="remove the audio (and WAV/FLAC copies, partial downloads) of the recordings"
        " marked deleted; their rows stay as tombstones (default: keep everything)",
    )
    synced.add_argument(
        "--keep",
        metavar="AGE",
        help="a retention rule: remove the audio of recordings created more than AGE ago"
        " (90d, 12h, 2w) and never fetch them again (default: keep everything)",
    )
    synced.add_argument("--api-url", default=None, help="default: $SIRO_API_URL or Siro's API")

    checked = commands.add_parser(
        "verify",
        parents=[places, shown],
        help="check every complete recording's file against the manifest's size and sha256",
        description=textwrap.fill(
            "Check every complete row's file in --out-dir against its size (from one listing) "
            "and its sha256 (read in parallel; in a bucket, the row's md5 against the MD5 the "
            "listing gives, without a download); find partial and temporary files no run is at "
            "work on, and files no row claims. One line per kind of problem, with examples.",
            79,
        ),
        epilog=_VERIFY_EXIT_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    checked.add_argument("--workers", type=int, default=4, help="files read at once")
    checked.add_argument(
        "--repair",
        action="store_true",
        help="turn bad rows into failed rows (error_kind missing or corrupt) and remove their "
        "files and the leftovers: the next fetch or sync fetches them again",
    )
    checked.add_argument(
        "--delete-orphans", action="store_true", help="delete the files no row claims"
    )

    pruned = commands.add_parser(
        "prune",
        parents=[places],
        help="a retention rule: remove the audio of recordings older than a limit",
        description=textwrap.fill(
            "Remove the audio of the recordings created (by Siro's dates, in the listing a"
            " sync keeps) more than --older-than ago, with their WAV/FLAC copies and partial"
            " downloads; their rows stay in the manifest as tombstones (status expired) that"
            " no sync fetches again. A recording another process is fetching is left for the"
            " next run.",
            79,
        ),
        epilog=_EXIT_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pruned.add_argument(
        "--older-than", required=True, metavar="AGE", help="the limit: 90d, 12h, 2w, 30min"
    )
    _storage_option(pruned)
    pruned.add_argument("--verbose", "-v", action="store_true", help="debug logging")

    commands.add_parser(
        "demo",
        parents=[common, overwrite],
        help="run the whole job against the built-in emulator (no token, no network)",
    )
    commands.add_parser(  # listed here; main() hands its arguments to the emulator's own parser
        "emulator", help="serve the local Siro emulator (siro-data emulator --help: its switches)"
    )
    return top


def _storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="for gs:// and s3:// places, an fsspec storage option (endpoint_url=..., "
        "project=...); repeat for more. Credentials come from the provider's own variables",
    )


if __name__ == "__main__":
    sys.exit(main())
