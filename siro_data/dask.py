"""fetch_all over a Dask DataFrame: partitions on the cluster's workers, one rate limit for all.

:func:`siro_data.fetch_all` hands a Dask DataFrame here. Each partition runs
the single-machine :func:`siro_data.core.run` on a worker, into the shared
``out_dir``, with its own manifest file ``<manifest folder>/part-NNNNN.parquet``,
resuming from the whole folder; the folder reads as one manifest
(:func:`siro_data.read_manifest`, ``pandas.read_parquet``,
``dask.dataframe.read_parquet``). What holds on one machine holds per worker:
atomic files, resume from partial files, file locks so that no two workers
fetch one recording at once. Siro's rate limit is per token, so the API calls
of every worker take their slots from one schedule kept by the scheduler
(:class:`ClusterPacer`).
"""

from __future__ import annotations

import copy
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd

from . import core, processors
from .archive import Archive, location
from .client import SiroClient, resolve_api_url
from .download import Downloader
from .inputs import check_settings, id_values
from .progress import TqdmProgress
from .ratelimit import RateLimiter
from .rows import to_frame
from .tokens import TokenSource, resolve_token

#: The most ids a partition of sync's fetch holds: a worker that dies loses no more than its
#: recordings in flight, and a partition that ends early leaves little on the table.
PARTITION = 500


class Secret:
    """A secret travelling to the workers (the token, the storage options): its repr, and
    Dask's name for it, show nothing."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self._name = uuid.uuid4().hex

    def __repr__(self) -> str:
        return "Secret('***')"

    def __dask_tokenize__(self) -> str:
        return self._name


class ClusterPacer:
    """One schedule of API slots for the whole cluster, kept by the Dask scheduler.

    Each call takes the next free slot under a cluster-wide ``distributed.Lock``
    and a ``distributed.Variable`` holding the next slot's time (wall clock),
    then sleeps until it: no window of ``period`` seconds holds more than
    ``calls`` requests, however many workers and threads ask. The state lives on
    the scheduler, so a worker that dies takes nothing with it. Drop-in for
    :class:`siro_data.RateLimiter` (``acquire()``).
    """

    def __init__(
        self, calls: int, period: float = 60.0, margin: float = 0.01, client: Any = None
    ) -> None:
        from distributed import Variable

        self.interval = RateLimiter(calls, period, margin).interval
        self.name = f"siro-data-pace-{uuid.uuid4().hex}"
        self._client = None
        Variable(self.name, client=client).set(0.0)

    def on_worker(self) -> ClusterPacer:
        """This pacer bound to the worker's client, for the threads a task starts.

        (Only a task's own thread finds the client by itself.)
        """
        from distributed import get_client

        return self.bound(get_client())

    def bound(self, client: Any) -> ClusterPacer:
        """This pacer taking its slots through ``client`` (a ``distributed.Client``)."""
        bound = copy.copy(self)
        bound._client = client
        return bound

    def acquire(self) -> None:
        """Block until this caller's slot comes."""
        from distributed import Lock, Variable

        client = self._client
        on = {"scheduler_rpc": client.scheduler, "loop": client.loop} if client else {}
        with Lock(f"{self.name}-lock", **on):
            next_slot = Variable(self.name, client=self._client)
            now = time.time()
            slot = max(now, next_slot.get())
            next_slot.set(slot + self.interval)
        if slot > now:
            time.sleep(slot - now)

    def __repr__(self) -> str:
        return f"ClusterPacer(interval={self.interval:.4f} s)"


@dataclass(frozen=True)
class _Job:
    """What every partition needs; its repr shows no secret."""

    token: Secret
    api_url: str
    out_dir: str
    manifest: str  # a folder with a part per partition, or the one manifest every partition adds to
    parts: bool
    pacer: Any
    workers: int
    overwrite: bool
    timeout: tuple[float, float]
    convert_to: str | None
    storage_options: Secret


def run(
    ddf: Any,
    id_column: str,
    out_dir: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str],
    token: TokenSource | None,
    api_url: str | None,
    workers: int,
    overwrite: bool,
    requests_per_minute: int,
    timeout: tuple[float, float],
    convert_to: str | None,
    storage_options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """:func:`siro_data.fetch_all` for a Dask DataFrame (or Series) of ids: on the cluster.

    With a ``distributed.Client`` active, each partition runs on a worker;
    without one, on this machine's threads. The parameters are
    :func:`siro_data.fetch_all`'s; ``out_dir`` and ``manifest_path`` are a
    bucket prefix every worker reaches (``gs://``, ``s3://``: workers then need
    no shared disk, each stages its partial downloads in its own local
    directory), or paths every worker sees (a shared file system).
    ``workers`` counts threads per partition.

    Returns
    -------
    pandas.DataFrame
        The manifest of this call, one row per distinct id, partitions in order.
        ``manifest_path`` is a folder of parquet files, one per partition;
        :func:`siro_data.read_manifest` reads it whole.

    Examples
    --------
    >>> import tempfile, pathlib, pandas as pd, dask.dataframe as dd
    >>> import siro_data
    >>> from siro_data.emulator import Emulator
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with Emulator() as emu:
    ...     ids = dd.from_pandas(pd.DataFrame({"recording_id": list(emu.recordings)[:4]}),
    ...                          npartitions=2)
    ...     manifest = siro_data.fetch_all(ids, out_dir=folder / "audio",
    ...                                    manifest_path=folder / "m", token=emu.token,
    ...                                    api_url=emu.api_url, workers=8)
    >>> manifest["error"].isna().all(), len(manifest)
    (np.True_, 4)
    """
    ids = id_values(ddf, id_column)
    check_settings(workers, convert_to)
    manifest_dir = location(manifest_path)
    if os.path.isfile(manifest_dir):
        raise ValueError(f"manifest_path {manifest_dir} must be a folder (one file per partition)")
    Archive(out_dir, f"{manifest_dir}/part-00000.parquet", storage_options).check()
    job = _Job(
        token=Secret(resolve_token(token)),
        api_url=resolve_api_url(api_url),
        out_dir=location(out_dir),
        manifest=manifest_dir,
        parts=True,
        pacer=_pacer(requests_per_minute),
        workers=workers,
        overwrite=overwrite,
        timeout=timeout,
        convert_to=convert_to,
        storage_options=Secret(dict(storage_options or {})),
    )
    tasks = partition_tasks(ids.to_delayed(), job)
    cluster = _distributed_client()
    if cluster is not None:
        frames = cluster.gather(cluster.compute(tasks))
    else:
        frames = dask.compute(*tasks, scheduler="threads")
    seen: set[str | None] = set()
    rows = []
    for frame in frames:  # an id in two partitions: its first row
        for row in frame.to_dict("records"):
            if row["recording_id"] not in seen:
                seen.add(row["recording_id"])
                rows.append(row)
    manifest = to_frame(rows)
    core.report_outcome(manifest)
    return manifest


def fetch_planned(
    cluster: Any,
    ids: Sequence[str],
    archive: Archive,
    *,
    token: TokenSource | None,
    api_url: str,
    pacer: ClusterPacer,
    workers: int,
    timeout: tuple[float, float],
    convert_to: str | None,
) -> None:
    """:func:`siro_data.sync`'s fetch on ``cluster`` (a ``distributed.Client``): ``ids`` in
    partitions on its workers, each adding its rows to the archive's one manifest.

    Each worker's rows reach the manifest as a second process's do on one machine: under
    the manifest's lock on a shared disk, in chunks folded with conditional writes in a
    bucket. ``pacer`` is the schedule the caller's listing already took its slots from.
    """
    if not ids:
        return
    job = _Job(
        token=Secret(resolve_token(token)),
        api_url=api_url,
        out_dir=location(archive.out_dir),
        manifest=location(archive.manifest_path),
        parts=False,
        pacer=pacer,
        workers=workers,
        overwrite=False,
        timeout=timeout,
        convert_to=convert_to,
        storage_options=Secret(dict(archive.storage_options or {})),
    )
    count = max(2 * len(cluster.scheduler_info().get("workers", ())), -(-len(ids) // PARTITION))
    chunks = [list(chunk) for chunk in np.array_split(np.asarray(ids, dtype=object), count)]
    parts = [pd.Series(chunk, name="recording_id") for chunk in chunks if chunk]
    cluster.gather(cluster.compute(partition_tasks(parts, job)))


def partition_tasks(partitions: Iterable[Any], job: _Job) -> list[Any]:
    """One ``dask.delayed`` task per partition of ids (delayed, or a pandas Series)."""
    fetch = dask.delayed(_fetch_partition, pure=False)
    return [
        fetch(part, index, job, dask_key_name=f"siro-data-fetch-{index}-{uuid.uuid4().hex[:8]}")
        for index, part in enumerate(partitions)
    ]


def _fetch_partition(ids: pd.Series, index: int, job: _Job) -> pd.DataFrame:
    """On a worker: the partition's ids, resumed from the whole folder, into its own file."""
    pacer = job.pacer.on_worker() if isinstance(job.pacer, ClusterPacer) else job.pacer

    def connect() -> SiroClient:
        return SiroClient(job.token.value, job.api_url, rate_limiter=pacer, timeout=job.timeout)

    manifest = f"{job.manifest}/part-{index:05d}.parquet" if job.parts else job.manifest
    archive = Archive(job.out_dir, manifest, job.storage_options.value, staging=_worker_staging())
    with Downloader(timeout=job.timeout) as downloader:
        return core.run(
            ids,
            archive,
            connect=connect,
            downloader=downloader,
            reporter=TqdmProgress(disable=True),
            workers=job.workers,
            overwrite=job.overwrite,
            steps=processors.for_settings(job.convert_to, archive.audio, job.overwrite),
            resume_from=job.manifest if job.parts else None,
        )


def _worker_staging() -> Path | None:
    """On a Dask worker, where a bucket's partials wait: beside the worker's own directory,
    in its machine's scratch space, shared by the machine's workers (their locks keep them
    apart) and kept when a worker is restarted, so that its partials are continued."""
    try:
        from distributed import get_worker

        return Path(get_worker().local_directory).parent / "siro-data-staging"
    except (ImportError, ValueError):
        return None


def _pacer(requests_per_minute: int) -> Any:
    """The cluster's schedule with a distributed client; else one for this process's threads."""
    if _distributed_client() is not None:
        return ClusterPacer(requests_per_minute, 60.0)
    return RateLimiter(requests_per_minute, 60.0)


def _distributed_client() -> Any:
    """The current ``distributed.Client`` (the default one, or one made current), if any."""
    try:
        from distributed import Client
    except ImportError:
        return None
    try:
        return Client.current()
    except ValueError:
        return None
