"""Query latency of exact top-10 retrieval, and index-building throughput against raw prediction.

Galleries are random 40-d vectors (uniform in [0, 1), like predicted probabilities): the
latency figures are on synthetic vectors, which is all an exact search depends on (its
cost does not depend on the values). With ``--run`` the index-building part predicts
real images of the given root and split and says so.

    python benchmarks/bench_retrieval.py
    python benchmarks/bench_retrieval.py --sizes 10000 200000 --run runs/NAME --split val --limit 2000
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from celebalib.retrieval import VectorSearch, faiss_available, top_k

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # only the figures on the console

K = 10
DIM = 40
# The per-row Python loop is timed on at most this many rows and scaled linearly.
LOOP_ROWS = 20_000


def timings(call: Callable[[int], object], repeats: int) -> np.ndarray:
    """Seconds per call for ``repeats`` calls, each given its repeat number."""
    call(0)  # warm-up: first-touch page faults and BLAS start-up
    out = []
    for i in range(repeats):
        start = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - start)
    return np.asarray(out)


def line(label: str, seconds: np.ndarray, note: str = "") -> None:
    """Print median and 95th percentile in milliseconds."""
    median, p95 = np.median(seconds) * 1e3, np.percentile(seconds, 95) * 1e3
    print(f"  {label:<50} median {median:9.2f} ms   p95 {p95:9.2f} ms  {note}")


def python_loop(query: np.ndarray, gallery: np.ndarray) -> list[int]:
    """The naive way: one distance per row in a Python loop, then a full sort."""
    distances = [float(np.sqrt(((row - query) ** 2).sum())) for row in gallery]
    return sorted(range(len(distances)), key=distances.__getitem__)[:K]


def bench_size(n: int, repeats: int, rng: np.random.Generator) -> None:
    """Latency of one top-10 query over ``n`` vectors, by every method."""
    gallery = rng.random((n, DIM), dtype=np.float32)
    queries = rng.random((max(repeats, 8), DIM), dtype=np.float32)
    print(f"\ngallery of {n:,} x {DIM} random vectors (synthetic), one top-{K} query:")
    search = VectorSearch(gallery)
    line("celebalib VectorSearch.search (prepared)", timings(lambda i: search.search(queries[i], K), repeats))
    one_shot = timings(lambda i: top_k(queries[i], gallery, K), max(3, repeats // 10))
    line("celebalib top_k (prepares on every call)", one_shot)
    if faiss_available():
        flat = VectorSearch(gallery, backend="faiss")
        line("celebalib backend='faiss' (IndexFlatL2)", timings(lambda i: flat.search(queries[i], K), repeats))
    brute = NearestNeighbors(n_neighbors=K, algorithm="brute").fit(gallery)
    sklearn = timings(lambda i: brute.kneighbors(queries[i:i + 1]), max(5, repeats // 4))
    line("scikit-learn NearestNeighbors(brute)", sklearn)
    # celebalib searches on one thread; give scikit-learn the same, which helps it on a busy machine.
    with threadpool_limits(1):
        sklearn = timings(lambda i: brute.kneighbors(queries[i:i + 1]), max(5, repeats // 4))
    line("scikit-learn NearestNeighbors(brute), 1 thread", sklearn)
    rows = min(n, LOOP_ROWS)
    loop = timings(lambda i: python_loop(queries[i], gallery[:rows]), 3) * (n / rows)
    line("per-row Python loop", loop, f"(timed on {rows:,} rows, scaled x{n / rows:g})" if rows < n else "")
    del search, brute


def bench_batch(n: int, batch: int, rng: np.random.Generator) -> None:
    """Per-query cost when ``batch`` queries are answered in one call."""
    gallery = rng.random((n, DIM), dtype=np.float32)
    queries = rng.random((batch, DIM), dtype=np.float32)
    print(f"\nbatched: {batch:,} queries at once over {n:,} x {DIM} random vectors (synthetic), per query:")
    search = VectorSearch(gallery)
    line("celebalib VectorSearch.search (batch)", timings(lambda i: search.search(queries, K), 3) / batch)
    brute = NearestNeighbors(n_neighbors=K, algorithm="brute").fit(gallery)
    line("scikit-learn NearestNeighbors(brute)", timings(lambda i: brute.kneighbors(queries), 3) / batch)
    with threadpool_limits(1):
        line("scikit-learn NearestNeighbors(brute), 1 thread", timings(lambda i: brute.kneighbors(queries), 3) / batch)


def bench_build(run_dir: str, root: str | None, split: str, limit: int) -> None:
    """Images per second: GalleryIndex.build against the bare Keras model.predict."""
    from celebalib.data import default_root, load_celeba, make_dataset
    from celebalib.retrieval import GalleryIndex
    from celebalib.runs import open_run

    run = open_run(run_dir)
    table = load_celeba(root or default_root())
    rows = table[table["split"] == split].iloc[:limit]
    print(f"\nindex building on {len(rows):,} {split} images of {table.attrs.get('root')} "
          f"(run {run.run_id}, {run.image_size} px):")
    dataset = make_dataset(rows, split, image_size=run.image_size, batch_size=run.config.get("batch_size", 64),
                           training=False, crop=run.crop, labels=False)
    model = run.model()
    model.predict(dataset.take(1), verbose=0)  # warm-up: tracing the predict function
    # Alternate the two and keep each one's best of three, so a burst of other work on the
    # machine does not decide the comparison.
    raw, built = np.inf, np.inf
    for _ in range(3):
        start = time.perf_counter()
        model.predict(dataset, verbose=0)
        middle = time.perf_counter()
        GalleryIndex.build(run, rows, split, progress=False)
        raw, built = min(raw, middle - start), min(built, time.perf_counter() - middle)
    print(f"  raw model.predict          {len(rows) / raw:9.1f} images/s (best of 3)")
    print(f"  GalleryIndex.build         {len(rows) / built:9.1f} images/s (best of 3, {raw / built:.0%} of raw)")


def main() -> None:
    """Parse the options and print every figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 200_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=50, help="queries timed per method")
    parser.add_argument("--batch", type=int, default=1000, help="queries in the batched test")
    parser.add_argument("--run", help="a run folder, to time index building")
    parser.add_argument("--data", help="CelebA root for --run (default: the configured data root)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # Other work on the machine slows every method; the load average tells the reader how busy it was.
    print(f"exact top-{K} retrieval; faiss {'available' if faiss_available() else 'not installed'}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for n in args.sizes:
        bench_size(n, args.repeats, rng)
    bench_batch(200_000 if 200_000 in args.sizes else args.sizes[0], args.batch, rng)
    if args.run:
        bench_build(args.run, args.data, args.split, args.limit)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
