"""Check: the shared EMOVO and RAVDESS through object storage give the same feature table.

Starts an S3 server on loopback (moto's threaded server), uploads the real
corpora to it, runs the feature extraction reading audio from and writing the
store to ``s3://…``, runs the same on local disk, and compares the tables
(with each ``uri`` taken relative to its corpus root).

    python benchmarks/s3_features.py [--corpora ../shared/corpora] [--cpus 2]
"""

from __future__ import annotations

import argparse
import logging
import socket
import tempfile
import time
from pathlib import Path

import boto3
import pandas as pd
from moto.server import ThreadedMotoServer

from crossemo import featurestore, orchestration, pipeline

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "crossemo-check"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def relative(frame: pd.DataFrame, roots: dict[str, str]) -> pd.DataFrame:
    frame = frame.copy()
    frame["uri"] = [uri.removeprefix(roots[corpus]).lstrip("/") for corpus, uri in zip(frame["corpus"], frame["uri"])]
    return frame.sort_values("uri", ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=str(ROOT.parent / "shared" / "corpora"))
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {"endpoint_url": endpoint, "key": "check-key", "secret": "check-secret"}
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="check-key", aws_secret_access_key="check-secret")
        client.create_bucket(Bucket=BUCKET)
        started = time.perf_counter()
        uploaded = 0
        for name in ("emovo", "ravdess"):
            for path in sorted(Path(args.corpora, name).rglob("*.flac")):
                client.upload_file(str(path), BUCKET, f"corpora/{name}/{path.relative_to(Path(args.corpora, name)).as_posix()}")
                uploaded += 1
        upload_seconds = time.perf_counter() - started
        orchestration.connect(num_cpus=args.cpus)
        with tempfile.TemporaryDirectory() as local_out:
            local = pipeline.RunConfig(out=local_out, corpora=[pipeline.CorpusSpec(n, f"{args.corpora}/{n}") for n in ("emovo", "ravdess")], progress=False)
            remote = pipeline.RunConfig(out=f"s3://{BUCKET}/out", corpora=[pipeline.CorpusSpec(n, f"s3://{BUCKET}/corpora/{n}") for n in ("emovo", "ravdess")], storage_options=options, progress=False)
            started = time.perf_counter()
            pipeline.run(local, evaluate=False)
            local_seconds = time.perf_counter() - started
            started = time.perf_counter()
            pipeline.run(remote, evaluate=False)
            remote_seconds = time.perf_counter() - started
            ours = featurestore.load_features(f"{local_out}/features")
            theirs = featurestore.load_features(f"s3://{BUCKET}/out/features", storage_options=options)
            equal = {}
            for corpus in ours:
                a = relative(ours[corpus], {corpus: f"{args.corpora}/{corpus}"})
                b = relative(theirs[corpus], {corpus: f"s3://{BUCKET}/corpora/{corpus}"})
                pd.testing.assert_frame_equal(a, b)
                equal[corpus] = a.shape
    finally:
        server.stop()
    print(pd.Series({
        "files uploaded": uploaded,
        "upload seconds": round(upload_seconds, 1),
        "local extraction seconds": round(local_seconds, 1),
        "s3 extraction seconds": round(remote_seconds, 1),
        "identical tables (rows x columns)": equal,
    }).to_string())


if __name__ == "__main__":
    main()
