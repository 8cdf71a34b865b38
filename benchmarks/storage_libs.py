"""Which storage library for ``gs://`` and ``s3://`` out_dirs and manifests: fsspec (s3fs,
gcsfs), obstore, or the providers' own clients (boto3, google-cloud-storage)?

Against the tests' local servers (moto for S3, fake-gcs-server for GCS, both on 127.0.0.1,
every cloud credential lookup pinned to loopback as in the tests), each library in turn:

- **upload**: a 200 MB local file streamed up through the library's writable stream (1 MiB
  writes, as a recording copied while it downloads; boto3 reads the file object itself):
  MB/s, and the peak RSS rise of the measured child during the upload; then a 1000 MB file
  once, for the growth of that rise per GiB streamed (a library that held the whole file
  would grow by about 1024 MiB per GiB; one that streams, by about 0);
- **list**: one listing of a prefix of 10,000 keys: seconds, and requests the server logged;
- **conditional writes**: create-if-absent (twice: the second must be refused), replace-if-
  unchanged (with the current ETag or generation: written; with a stale one: refused), and
  create-if-absent of a 12 MiB object sent in parts; how each is spelled.

Each measure runs ``--repeat`` times (3) in a fresh child process, and the median is printed
with the range; ratios are to fsspec's figure on the same server. The machine's load is
printed before and after: the servers share its cores with the clients.

Usage: ``python benchmarks/storage_libs.py`` (``--mb 200 --large-mb 1000 --keys 10000
--repeat 3``), after
``pip install -e '.[test,bench]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import MB, command_line, load, measure, run_child, table, write_json
from support import (
    Bucket,
    ObjectStoreServer,
    fake_gcs_server,
    moto_server,
    new_gcs_bucket,
    new_s3_bucket,
    pin_to_loopback,
)

MiB = 2**20
CHUNK = MiB
PARTED = 12 * MiB
"""The size of the object a conditional create sends in parts (5 MiB each)."""

#: Contenders, by server: (label, library, options for its writer).
UPLOADS = {
    "s3": [
        ("s3fs, default 50 MiB blocks", "fsspec", {}),
        ("s3fs, 8 MiB blocks", "fsspec", {"block_size": 8 * MiB}),
        ("obstore, default 10 MiB buffer", "obstore", {}),
        ("boto3 upload_fileobj, default 8 MiB parts", "boto3", {}),
    ],
    "gcs": [
        ("gcsfs, default 5 MiB blocks", "fsspec", {}),
        ("gcsfs, 8 MiB blocks", "fsspec", {"block_size": 8 * MiB}),
        ("obstore, default 10 MiB buffer", "obstore", {}),
        ("google-cloud-storage, default 40 MiB chunks", "google", {}),
        ("google-cloud-storage, 8 MiB chunks", "google", {"chunk_size": 8 * MiB}),
    ],
}
LIBRARIES = {"s3": ["fsspec", "obstore", "boto3"], "gcs": ["fsspec", "obstore", "google"]}
NAMES = {
    ("s3", "fsspec"): "fsspec (s3fs)",
    ("gcs", "fsspec"): "fsspec (gcsfs)",
    ("s3", "obstore"): "obstore",
    ("gcs", "obstore"): "obstore",
    ("s3", "boto3"): "boto3",
    ("gcs", "google"): "google-cloud-storage",
}


# --- each library, in the measured child ------------------------------------------------------


class Client:
    """One library's way to stream up, list, and write conditionally, for one bucket."""

    #: How its conditional writes are spelled (printed under the table).
    spelling = ""

    def __init__(self, bucket: dict[str, Any]):
        self.bucket = Bucket(**bucket)

    def key(self, name: str) -> str:
        return f"{self.bucket.prefix}/{name}"

    def upload(self, source: Path, name: str, options: dict[str, Any]) -> None:
        raise NotImplementedError

    def list(self, prefix: str) -> int:
        """How many keys are under ``prefix``."""
        raise NotImplementedError

    def create(self, name: str, data: bytes) -> str:
        """Write only if absent: its version (ETag or generation); raises if refused."""
        raise NotImplementedError

    def version(self, name: str) -> str:
        raise NotImplementedError

    def replace(self, name: str, data: bytes, version: str) -> None:
        """Write only if ``name`` is still at ``version``; raises if refused."""
        raise NotImplementedError

    def create_in_parts(self, name: str, data: bytes) -> None:
        """Write only if absent, sending ``data`` in 5 MiB parts; raises if refused."""
        raise NotImplementedError


class Fsspec(Client):
    spelling = (
        "`fs.pipe_file(url, data, mode='create')` (both); replace: s3fs "
        "`fs.pipe_file(url, data, IfMatch=etag)`; gcsfs: none"
    )

    def __init__(self, bucket: dict[str, Any]):
        super().__init__(bucket)
        self.fs = self.bucket.filesystem()

    def url(self, name: str) -> str:
        return f"{self.bucket.url}/{name}"

    def upload(self, source, name, options):
        with source.open("rb") as local, self.fs.open(self.url(name), "wb", **options) as remote:
            while chunk := local.read(CHUNK):
                remote.write(chunk)

    def list(self, prefix):
        return len(self.fs.ls(f"{self.bucket.url}/{prefix}", detail=False))

    def create(self, name, data):
        self.fs.pipe_file(self.url(name), data, mode="create")
        return self.version(name)

    def version(self, name):
        info = self.fs.info(self.url(name))
        return info["ETag"] if self.bucket.protocol == "s3" else str(info["generation"])

    def replace(self, name, data, version):
        if self.bucket.protocol != "s3":
            raise NotImplementedError  # gcsfs has no write conditional on a generation
        self.fs.pipe_file(self.url(name), data, IfMatch=version)

    def create_in_parts(self, name, data):
        self.fs.pipe_file(self.url(name), data, mode="create", chunksize=5 * MiB)


class Obstore(Client):
    spelling = (
        "`obs.put(store, key, data, mode='create')`; replace: "
        "`mode={'e_tag': etag, 'version': generation}`"
    )

    def __init__(self, bucket: dict[str, Any]):
        super().__init__(bucket)
        from obstore.store import GCSStore, S3Store

        if self.bucket.protocol == "s3":
            # Endpoint, keys and region from the AWS_* variables, as boto3 reads them.
            self.store = S3Store(self.bucket.name, client_options={"allow_http": True})
        else:
            # object_store reads no STORAGE_EMULATOR_HOST: its emulator route is a service
            # account file naming the endpoint, with OAuth off.
            account = {
                "gcs_base_url": self.bucket.env["STORAGE_EMULATOR_HOST"],
                "disable_oauth": True,
                "client_email": "",
                "private_key": "",
                "private_key_id": "",
            }
            self.store = GCSStore(
                self.bucket.name,
                service_account_key=json.dumps(account),
                client_options={"allow_http": True},
            )

    def upload(self, source, name, options):
        import obstore

        with source.open("rb") as local, obstore.open_writer(self.store, self.key(name)) as out:
            while chunk := local.read(CHUNK):
                out.write(chunk)

    def list(self, prefix):
        import obstore

        return sum(len(page) for page in obstore.list(self.store, self.key(prefix) + "/"))

    def create(self, name, data):
        import obstore

        return obstore.put(self.store, self.key(name), data, mode="create")["e_tag"]

    def version(self, name):
        import obstore

        meta = obstore.head(self.store, self.key(name))
        return json.dumps({"e_tag": meta["e_tag"], "version": meta["version"]})

    def replace(self, name, data, version):
        import obstore

        mode = {k: v for k, v in json.loads(version).items() if v is not None}
        obstore.put(self.store, self.key(name), data, mode=mode)

    def create_in_parts(self, name, data):
        import io

        import obstore

        obstore.put(self.store, self.key(name), io.BytesIO(data), mode="create", chunk_size=5 * MiB)


class Boto3(Client):
    spelling = "`put_object(..., IfNoneMatch='*')`; replace: `put_object(..., IfMatch=etag)`"

    def __init__(self, bucket: dict[str, Any]):
        super().__init__(bucket)
        import boto3

        self.s3 = boto3.client("s3")  # endpoint, keys and region from the AWS_* variables

    def upload(self, source, name, options):
        with source.open("rb") as local:
            self.s3.upload_fileobj(local, self.bucket.name, self.key(name))

    def list(self, prefix):
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket.name, Prefix=self.key(prefix) + "/"
        )
        return sum(page.get("KeyCount", 0) for page in pages)

    def create(self, name, data):
        answer = self.s3.put_object(
            Bucket=self.bucket.name, Key=self.key(name), Body=data, IfNoneMatch="*"
        )
        return answer["ETag"]

    def version(self, name):
        return self.s3.head_object(Bucket=self.bucket.name, Key=self.key(name))["ETag"]

    def replace(self, name, data, version):
        self.s3.put_object(Bucket=self.bucket.name, Key=self.key(name), Body=data, IfMatch=version)

    def create_in_parts(self, name, data):
        bucket, key = self.bucket.name, self.key(name)
        upload = self.s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts = []
        for number, offset in enumerate(range(0, len(data), 5 * MiB), start=1):
            body = data[offset : offset + 5 * MiB]
            answer = self.s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self.s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload,
            MultipartUpload={"Parts": parts},
            IfNoneMatch="*",
        )


class Google(Client):
    spelling = (
        "`blob.upload_from_file(f, if_generation_match=0)`; replace: "
        "`if_generation_match=generation`"
    )

    def __init__(self, bucket: dict[str, Any]):
        super().__init__(bucket)
        from google.cloud import storage

        # The endpoint from STORAGE_EMULATOR_HOST; with it, no credentials are looked for.
        self.client = storage.Client(project=self.bucket.storage_options["project"])
        self.gcs_bucket = self.client.bucket(self.bucket.name)

    def upload(self, source, name, options):
        blob = self.gcs_bucket.blob(self.key(name), chunk_size=options.get("chunk_size"))
        with source.open("rb") as local, blob.open("wb") as remote:
            while chunk := local.read(CHUNK):
                remote.write(chunk)

    def list(self, prefix):
        return sum(
            1 for _ in self.client.list_blobs(self.gcs_bucket, prefix=self.key(prefix) + "/")
        )

    def create(self, name, data):
        blob = self.gcs_bucket.blob(self.key(name))
        blob.upload_from_string(data, if_generation_match=0)
        return str(blob.generation)

    def version(self, name):
        return str(self.gcs_bucket.get_blob(self.key(name)).generation)

    def replace(self, name, data, version):
        self.gcs_bucket.blob(self.key(name)).upload_from_string(
            data, if_generation_match=int(version)
        )

    def create_in_parts(self, name, data):
        blob = self.gcs_bucket.blob(self.key(name), chunk_size=5 * MiB)
        blob.upload_from_string(data, if_generation_match=0)


CLIENTS: dict[str, type[Client]] = {
    "fsspec": Fsspec,
    "obstore": Obstore,
    "boto3": Boto3,
    "google": Google,
}


#: What each library raises when the server answers 412 Precondition Failed.
REFUSALS = ("FileExistsError", "AlreadyExistsError", "PreconditionError", "PreconditionFailed")


def refused(error: Exception) -> bool:
    """Whether ``error`` is the server refusing a precondition, not any other failure."""
    text = str(error)
    return (
        type(error).__name__ in REFUSALS
        or "PreconditionFailed" in text
        or "pre-conditions you specified did not hold" in text
    )


def outcome(call: Callable[[], Any], must_fail: bool) -> str:
    """``ok`` or ``refused`` as it must be; ``NOT refused`` or the error where it is not."""
    try:
        call()
    except NotImplementedError:
        return "not offered"
    except Exception as error:
        if must_fail and refused(error):
            return "refused"
        return f"error: {type(error).__name__}"
    return "NOT refused" if must_fail else "ok"


def conditional(client: Client, run: str) -> dict[str, str]:
    """The four conditional writes, and create-if-absent in parts, on fresh keys."""
    name = f"conditional/{run}"
    results = {"create": outcome(lambda: client.create(name, b"first"), must_fail=False)}
    results["create again"] = outcome(lambda: client.create(name, b"second"), must_fail=True)
    try:
        first = client.version(name)
    except Exception as error:
        results["replace"] = results["stale replace"] = f"error: {type(error).__name__}"
    else:
        results["replace"] = outcome(lambda: client.replace(name, b"third", first), False)
        results["stale replace"] = outcome(lambda: client.replace(name, b"stale", first), True)
    parted = f"{name}-parted"
    data = os.urandom(PARTED)
    results["parts"] = outcome(lambda: client.create_in_parts(parted, data), must_fail=False)
    results["parts again"] = outcome(lambda: client.create_in_parts(parted, data), True)
    return results


def child(job: dict[str, Any]) -> None:
    """Run one measure in this process; its result is the last line printed."""
    client = CLIENTS[job["library"]](job["bucket"])
    if job["measure"] == "upload":
        source = Path(job["source"])
        measured = measure(lambda: client.upload(source, job["name"], job["options"]))
        measured.pop("result")
        write_json(measured)
    elif job["measure"] == "list":
        measured = measure(lambda: client.list(job["prefix"]))
        write_json({"wall": measured["wall"], "keys": measured["result"]})
    else:
        write_json(conditional(client, job["name"]))


# --- the parent: servers, data, contenders side by side ---------------------------------------


def run(job: dict[str, Any], bucket: Bucket) -> dict[str, Any]:
    """One measure in a fresh child, whose environment reaches ``bucket`` as a user's would."""
    job = {
        **job,
        "bucket": {"url": bucket.url, "storage_options": bucket.storage_options, "env": bucket.env},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump(job, spec)
    try:
        return run_child([__file__, "--child", spec.name], env={**os.environ, **bucket.env})
    finally:
        os.unlink(spec.name)


def write_source(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for offset in range(0, size, 8 * MiB):
            out.write(os.urandom(min(8 * MiB, size - offset)))


def forget(bucket: Bucket, prefix: str) -> None:
    """Delete what is under ``prefix`` (the servers keep objects in memory)."""
    fs = bucket.filesystem()
    fs.invalidate_cache()
    with contextlib.suppress(FileNotFoundError):
        fs.rm(f"{bucket.url}/{prefix}", recursive=True)


def fill(bucket: Bucket, prefix: str, keys: int) -> float:
    """``keys`` small objects under ``prefix``, written concurrently by fsspec: seconds."""
    started = time.perf_counter()
    fs = bucket.filesystem()
    objects = {f"{bucket.url}/{prefix}/key-{n:06d}": b"x" for n in range(keys)}
    fs.pipe(objects, batch_size=64)
    return time.perf_counter() - started


def median_range(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:.{digits}f}"
    return f"{middle:.{digits}f} ({min(values):.{digits}f} to {max(values):.{digits}f})"


def ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}" if value and reference else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the uploaded file, MB")
    parser.add_argument(
        "--large-mb", type=int, default=1000, help="size of the file uploaded once more, MB"
    )
    parser.add_argument("--keys", type=int, default=10_000, help="keys under the listed prefix")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measure")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(Path(args.child).read_text()))
        return

    pin_to_loopback(os.environ)
    print(f"command: {command_line()}")
    print(f"machine: {os.cpu_count()} cores; before: {load()}")
    print(f"versions: {versions()}")
    with tempfile.TemporaryDirectory(prefix="siro-bench-") as folder:
        scratch = Path(folder)
        sizes = (args.mb * MB, args.large_mb * MB)
        small_file, large_file = scratch / "small.bin", scratch / "large.bin"
        write_source(small_file, sizes[0])
        write_source(large_file, sizes[1])
        with moto_server(scratch / "s3.log") as s3, fake_gcs_server(scratch / "gcs.log") as gcs:
            servers = {"s3": s3, "gcs": gcs}
            buckets = {"s3": new_s3_bucket(s3), "gcs": new_gcs_bucket(gcs)}
            for kind, bucket in buckets.items():
                seconds = fill(bucket, "listed", args.keys)
                print(f"{kind}: {args.keys} keys written in {seconds:.1f} s")
            uploads = measure_uploads(buckets, small_file, args.repeat)
            large_uploads = measure_uploads(buckets, large_file, 1)
            listings = measure_listings(buckets, servers, args.keys, args.repeat)
            conditionals = measure_conditionals(buckets)
    print(f"after: {load()}\n")
    print_uploads(uploads, large_uploads, sizes)
    print_listings(listings, args.keys)
    print_conditionals(conditionals)


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("fsspec", "s3fs", "gcsfs", "obstore", "boto3", "google-cloud-storage", "moto"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def measure_uploads(
    buckets: dict[str, Bucket], source: Path, repeat: int
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Each contender ``repeat`` times, the contenders interleaved so load drifts hit all."""
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for attempt in range(repeat):
        for kind, contenders in UPLOADS.items():
            for label, library, options in contenders:
                job = {
                    "library": library,
                    "measure": "upload",
                    "source": str(source),
                    "name": f"uploads/{library}-{attempt}",
                    "options": options,
                }
                try:
                    result = run(job, buckets[kind])
                except RuntimeError as error:
                    result = {"error": str(error)}
                results.setdefault((kind, label), []).append(result)
                forget(buckets[kind], "uploads")
    return results


def measure_listings(
    buckets: dict[str, Bucket], servers: dict[str, ObjectStoreServer], keys: int, repeat: int
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(repeat):
        for kind, libraries in LIBRARIES.items():
            for library in libraries:
                before = servers[kind].requests()
                try:
                    result = run(
                        {"library": library, "measure": "list", "prefix": "listed"}, buckets[kind]
                    )
                except RuntimeError as error:
                    result = {"error": str(error)}
                time.sleep(0.3)  # the server logs a request after answering it
                result["requests"] = servers[kind].requests() - before
                results.setdefault((kind, library), []).append(result)
    return results


def measure_conditionals(buckets: dict[str, Bucket]) -> dict[tuple[str, str], dict[str, str]]:
    results = {}
    for kind, libraries in LIBRARIES.items():
        for library in libraries:
            job = {"library": library, "measure": "conditional", "name": library}
            try:
                results[kind, library] = run(job, buckets[kind])
            except RuntimeError as error:
                results[kind, library] = {"error": str(error)}
    return results


def print_uploads(
    small: dict[tuple[str, str], list[dict[str, Any]]],
    large: dict[tuple[str, str], list[dict[str, Any]]],
    sizes: tuple[int, int],
) -> None:
    """Throughput over the repeated small uploads; memory at both sizes, and its growth per
    GiB more (flat, near 0, for a library that streams; about 1024 for one holding the file).
    """
    rows, reference = [], {}
    for key, runs in small.items():
        good = [r for r in runs if "error" not in r]
        speeds = [sizes[0] / MB / r["wall"] for r in good]
        speed = statistics.median(speeds) if speeds else None
        reference.setdefault(key[0], speed)
        rise_small = median_rise(good)
        rise_large = median_rise([r for r in large.get(key, []) if "error" not in r])
        growth = (
            "-"
            if rise_small is None or rise_large is None
            else f"{(rise_large - rise_small) * 2**30 / (sizes[1] - sizes[0]):.0f}"
        )
        rows.append(
            [
                *key,
                f"{len(good)}/{len(runs)}",
                median_range(speeds),
                ratio(speed, reference[key[0]]),
                median_range([rise(r) for r in good]),
                "-" if rise_large is None else f"{rise_large:.0f}",
                growth,
                "-" if rise_large is None else ("yes" if rise_large <= 50 else "NO"),
            ]
        )
    small_mb, large_mb = sizes[0] // MB, sizes[1] // MB
    print(
        f"Upload streamed from a local file: {small_mb} MB (median (min to max) of the runs), "
        f"then {large_mb} MB once\n"
    )
    headers = [
        "server",
        "library",
        "ok",
        "MB/s",
        "x first",
        f"RSS rise MiB, {small_mb} MB",
        f"RSS rise MiB, {large_mb} MB",
        "growth MiB per GiB",
        "≤ 50 MiB",
    ]
    print(table(headers, rows))
    print()


def rise(result: dict[str, Any]) -> float:
    """How far the child's peak resident set rose above where it was before the upload, MiB."""
    return (result["peak_rss"] - result["rss_before"]) / MiB


def median_rise(results: list[dict[str, Any]]) -> float | None:
    return statistics.median(rise(r) for r in results) if results else None


def print_listings(results: dict[tuple[str, str], list[dict[str, Any]]], keys: int) -> None:
    rows, reference = [], {}
    for (kind, library), runs in results.items():
        good = [r for r in runs if "error" not in r and r["keys"] == keys]
        seconds = [r["wall"] for r in good]
        middle = statistics.median(seconds) if seconds else None
        reference.setdefault(kind, middle)
        found = sorted({r.get("keys", "error") for r in runs}, key=str)
        rows.append(
            [
                kind,
                NAMES[kind, library],
                "/".join(map(str, found)),
                median_range([r["requests"] for r in runs], 0),
                median_range(seconds, 2),
                ratio(middle, reference[kind]),
            ]
        )
    print(f"LIST of a prefix of {keys:,} keys (median (min to max))\n")
    print(table(["server", "library", "keys found", "requests", "seconds", "x first"], rows))
    print()


def print_conditionals(results: dict[tuple[str, str], dict[str, str]]) -> None:
    columns = ["create", "create again", "replace", "stale replace", "parts", "parts again"]
    rows = [
        [
            kind,
            NAMES[kind, library],
            *(str(result.get(c, result.get("error", "-")))[:60] for c in columns),
        ]
        for (kind, library), result in results.items()
    ]
    print(
        "Conditional writes: create if absent (then again, must be refused), replace if "
        f"unchanged (current version, then a stale one), create if absent in parts "
        f"({PARTED // MiB} MiB in 5 MiB parts, then again)\n"
    )
    print(table(["server", "library", *columns], rows))
    print()
    for library, client in CLIENTS.items():
        print(f"- {library}: {client.spelling}")


if __name__ == "__main__":
    main()
