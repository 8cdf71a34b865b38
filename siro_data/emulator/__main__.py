"""``python -m siro_data.emulator``: serve a Siro emulator until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Sequence

from .emulator import Emulator
from .faults import Faults
from .samples import sample_recordings


def main(argv: Sequence[str] | None = None, prog: str = "python -m siro_data.emulator") -> int:
    """Parse `argv`, start an emulator, print where it is and serve until interrupted.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments without the program name; ``sys.argv[1:]`` by default.
    prog : str
        The command's name in ``--help`` (``siro-data emulator`` from the CLI).

    Returns
    -------
    int
        Exit status (0).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a local Siro API (signed URLs) and storage with sample recordings.",
    )
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    parser.add_argument(
        "--storage-port", type=int, default=0, help="storage port (default: a free one)"
    )
    parser.add_argument("--token", default="test-token", help="accepted x-siro-auth-token")
    parser.add_argument("--recordings", type=int, default=12, help="number of sample recordings")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to API answers")
    parser.add_argument(
        "--rate-limit", type=int, default=None, help="API requests per token per --rate-window"
    )
    parser.add_argument(
        "--rate-window", type=float, default=60.0, help="seconds of the rate limit's window"
    )
    parser.add_argument(
        "--retry-after",
        default=None,
        help="Retry-After header sent with a 429 or 503 (default: none)",
    )
    parser.add_argument(
        "--ttfb", type=float, default=0.0, help="seconds before storage sends its headers"
    )
    parser.add_argument(
        "--bandwidth", type=float, default=None, help="bytes per second per storage response"
    )
    parser.add_argument(
        "--total-bandwidth",
        type=float,
        default=None,
        help="bytes per second of all storage responses together (a shared downlink)",
    )
    parser.add_argument(
        "--clock-offset",
        type=float,
        default=0.0,
        help="seconds the emulator's clock is ahead of this machine's (negative: behind)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)

    faults = Faults(
        api_latency=args.latency,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        retry_after=args.retry_after,
        storage_ttfb=args.ttfb,
        bandwidth=args.bandwidth,
        total_bandwidth=args.total_bandwidth,
        clock_offset=args.clock_offset,
    )
    emulator = Emulator(
        recordings=sample_recordings(n=args.recordings),
        token=args.token,
        faults=faults,
        api_port=args.port,
        storage_port=args.storage_port,
    )
    with emulator:
        print(f"API:     {emulator.api_url}", flush=True)
        print(f"storage: {emulator.storage_url}", flush=True)
        print(f"token:   {emulator.token}", flush=True)
        client_id, client_secret, user_id = emulator.oauth_app
        print(
            f"minting: SIRO_FUNCTIONS_URL={emulator.functions_url} SIRO_CLIENT_ID={client_id}"
            f" SIRO_CLIENT_SECRET={client_secret} SIRO_USER_ID={user_id}"
            f" SIRO_ORG_TOKEN={emulator.organization_token}",
            flush=True,
        )
        print("recordings:", flush=True)
        for recording in emulator.recordings.values():
            print(
                f"  {recording.id}  {recording.extension:4}  {recording.duration:7.3f} s"
                f"  {recording.size:>9,d} B",
                flush=True,
            )
        print("Serving; Ctrl-C to stop.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
