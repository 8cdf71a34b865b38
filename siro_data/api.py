"""The public entry: :func:`fetch_all` picks the run that suits its ids.

A pandas table (or a list) runs on this machine's threads (:mod:`siro_data.core`);
a Dask DataFrame runs its partitions on the cluster (:mod:`siro_data.dask`),
each partition through the same single-machine run. This choice is all that
happens here, as requests' ``api`` sits over its ``Session``.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pandas as pd

from . import core, processors
from .archive import Archive
from .client import SiroClient, opened
from .download import Downloader
from .inputs import IdsLike, check_settings, is_dask
from .progress import ProgressChoice, Reporter, reporter_for
from .sessions import DEFAULT_TIMEOUT
from .tokens import TokenSource


def fetch_all(
    ids: IdsLike,
    id_column: str = "recording_id",
    out_dir: str | os.PathLike[str] = "data/recordings",
    manifest_path: str | os.PathLike[str] = "data/manifest.parquet",
    token: TokenSource | None = None,
    api_url: str | None = None,
    workers: int = 16,
    progress: bool | ProgressChoice | Reporter = "auto",
    overwrite: bool = False,
    *,
    client: SiroClient | None = None,
    downloader: Downloader | None = None,
    requests_per_minute: int = 1000,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    convert_to: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Download the audio of many recordings, resumably, and describe it in a manifest.

    Parameters
    ----------
    ids : DataFrame, Series or iterable
        Recording ids: a DataFrame's ``id_column``, or the values themselves.
        A Dask DataFrame or Series runs on the cluster: see
        :func:`siro_data.dask.run` (``manifest_path`` is then a folder;
        ``progress``, ``client`` and ``downloader`` are not used there).
        Duplicates are fetched once; numbers become strings; a null or empty
        id becomes a row with an error.
    id_column : str
        The id column when ``ids`` is a DataFrame.
    out_dir : path-like or str
        Where the audio files go, one per recording, named after its id: a
        folder, or a bucket prefix (``gs://bucket/prefix``, ``s3://...``).
    manifest_path : path-like or str
        The parquet manifest, a file or a bucket URL. It describes everything
        fetched into ``out_dir`` so far, across runs: rows of this call are
        added or updated.
    token : str or callable, optional
        Siro OAuth access token, or a function returning the current one
        (asked again once after a 401). Default: ``$SIRO_AUTH_TOKEN``. Not
        needed when every row is already complete.
    api_url : str, optional
        Default: ``$SIRO_API_URL``, else ``https://api.siro.ai``.
    workers : int
        Recordings in flight at once (signing and downloading overlap). A
        recording spends ~0.1 s at the API and most of a second downloading,
        so about 12 in flight are needed to use Siro's 1000 calls a minute;
        16 leaves room (see the README's figures).
    progress : {"auto", "bars", "log", "none"}, bool or Reporter
        What the run shows. ``"auto"`` (or True): in Jupyter, a control panel
        with a Stop button (:class:`siro_data.widgets.Panel`); where stderr is
        a terminal, tqdm bars; elsewhere (cron, Airflow, CI), one plain log
        line every 10 s through the ``siro_data.progress`` logger
        (:class:`siro_data.progress.LogProgress`). ``"bars"`` and ``"log"``
        choose one of those; ``"none"`` (or False) shows nothing; any
        :class:`siro_data.progress.Reporter` is used as it is.
    overwrite : bool
        Fetch every recording again, even those already complete.
    client : SiroClient, optional
        A client to use instead of one made from ``token`` and ``api_url``
        (its own pacing, timeouts and retries apply).
    downloader : Downloader, optional
        The storage side's policy (timeouts, retries, how many expiring URLs
        to try) instead of one made from ``timeout``.
    requests_per_minute : int
        Pace of API calls; Siro allows 1000 per token per minute.
    timeout : (float, float)
        Connect and read timeouts in seconds, for every request.
    convert_to : {None, "wav", "flac"}
        Also write, beside each download, a copy that soundfile and every
        audio tool read (16-bit PCM, the original rate and channels); its path
        is the ``audio_path`` column. Copies already made are kept; complete
        downloads without one are converted without being fetched again.
    storage_options : dict, optional
        For bucket URLs: what the fsspec filesystem (s3fs, gcsfs) takes, as
        ``pandas.read_parquet`` and Dask take them (``endpoint_url``, ``key``,
        ``secret``, ``token``, ``project``...). Without them, each provider's
        own chain and variables apply (``AWS_*``,
        ``GOOGLE_APPLICATION_CREDENTIALS``, ``STORAGE_EMULATOR_HOST``...).
        Never shown in logs, reprs, errors or a Dask graph.

    Returns
    -------
    pandas.DataFrame
        The manifest of this call: one row per distinct id, in input order,
        with the columns of :data:`siro_data.COLUMNS`. A row whose
        ``status`` is "ok" has its complete, checked file at ``path``; "failed"
        rows say why in ``error``. When the run was stopped (the panel's Stop
        button), the ids it did not reach have ``status`` "stopped": not a
        failure; run again to resume.

    Raises
    ------
    ValueError
        Bad input, before any request: no such column, no token, bad settings.
    AuthError
        The token was rejected (and could not be renewed): the run stopped,
        the manifest keeps every row finished before.
    OSError
        Writing failed (a full disk, for instance): the run stopped the same
        way, partial files are kept for the next run.
    KeyboardInterrupt
        Ctrl-C, or the kernel's interrupt in Jupyter: the run stops, the
        manifest is saved the same way, then the interrupt goes on (so a
        notebook's Run All stops there too).

    Notes
    -----
    Several processes may fetch into one ``out_dir`` and manifest at once:
    a lock per recording (a file in ``out_dir/.locks`` while it is fetched) keeps
    them from fetching the same file together, and the manifest's own lock keeps
    its rows whole. In a bucket, each writer adds its rows in chunks of its own,
    folded into the manifest with conditional writes: no row is lost; two
    machines may fetch one recording at once (at most the recordings in flight).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from siro_data.emulator import Emulator
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with Emulator() as emu:
    ...     manifest = fetch_all(list(emu.recordings)[:3], out_dir=folder / "audio",
    ...                          manifest_path=folder / "manifest.parquet",
    ...                          token=emu.token, api_url=emu.api_url, progress=False)
    >>> print(manifest["error"].isna().all())
    True
    """
    if is_dask(ids):
        from . import dask

        return dask.run(
            ids,
            id_column,
            out_dir,
            manifest_path,
            token,
            api_url,
            workers,
            overwrite,
            requests_per_minute,
            timeout,
            convert_to,
            storage_options,
        )
    check_settings(workers, convert_to)
    archive = Archive(out_dir, manifest_path, storage_options)
    reporter = reporter_for(progress, archive.manifest_path)

    def connect() -> AbstractContextManager[SiroClient]:
        """The API client, made only when some id must be fetched (no token needed before)."""
        return opened(
            client, token, api_url, requests_per_minute=requests_per_minute, timeout=timeout
        )

    with nullcontext(downloader) if downloader else Downloader(timeout=timeout) as storage:
        return core.run(
            ids,
            archive,
            id_column=id_column,
            connect=connect,
            downloader=storage,
            reporter=reporter,
            workers=workers,
            overwrite=overwrite,
            steps=processors.for_settings(convert_to, archive.audio, overwrite),
        )
