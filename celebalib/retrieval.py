"""Retrieve faces by their predicted attribute vectors: exact top-k, a gallery index, the CLI.

Ranking is by Euclidean distance between 40-d probability vectors (cosine as an option).
:func:`top_k` is the one search routine; :class:`GalleryIndex` holds a split's predictions
with image ids and paths, saves them as a pickle-free ``.npz`` and answers queries by
gallery image, by uploaded image or by an attribute description.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from celebalib.attributes import ATTRIBUTES
from celebalib.data import split_rows
from celebalib.errors import ConfigError, RunError
from celebalib.io import atomic_path

if TYPE_CHECKING:
    from celebalib.runs import Run

METRICS: tuple[str, ...] = ("euclidean", "cosine")
INDEX_FORMAT = 1


# ---------------------------------------------------------------------------------------
# Exact top-k search
# ---------------------------------------------------------------------------------------


def faiss_available() -> bool:
    """True when the optional ``faiss`` package can be imported."""
    return importlib.util.find_spec("faiss") is not None


def _check_metric(metric: str) -> None:
    """Raise ConfigError for an unknown metric name."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


def _as_matrix(values: Any, name: str) -> np.ndarray:
    """Return a finite 2-D float array, or raise ConfigError naming the argument."""
    array = np.asarray(values)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"{name}: expected a 2-D numeric array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{name}: contains NaN or infinite values")
    return array


def _unit_rows(array: np.ndarray) -> np.ndarray:
    """Scale rows to unit length; all-zero rows stay zero (cosine similarity 0 to anything)."""
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1, norms)


def _exact_top(query: np.ndarray, rows: np.ndarray, candidates: np.ndarray, k: int,
               cosine: bool) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidates in float64; sort by (distance, index).

    The score is the squared L2 distance, or for cosine 2 (1 - cos), which equals the squared
    distance of the unit vectors and keeps all-zero vectors at cosine distance 1.
    """
    chosen = rows[candidates].astype(np.float64)
    target = query.astype(np.float64)[None, :]
    if cosine:
        sq = 2.0 * (1.0 - _unit_rows(chosen) @ _unit_rows(target)[0])
    else:
        diff = chosen - target
        sq = np.einsum("ij,ij->i", diff, diff)
    order = np.lexsort((candidates, sq))[:k]
    return candidates[order], sq[order]


class VectorSearch:
    """Exact nearest-neighbour search over a fixed gallery, prepared once for fast queries.

    A float32 copy of the gallery is kept transposed (D, N) so that one query costs one
    contiguous matrix-vector product; candidates near the k-th place are then re-scored in
    float64, so results are exact and ties go to the lower index. The caller's array is
    referenced, not copied: do not modify it while the search is in use.
    """

    # Queries are scored in blocks of at most this many (query, gallery) pairs (32 MB).
    block_pairs = 2**23

    def __init__(self, gallery: Any, metric: str = "euclidean", *, backend: str = "numpy") -> None:
        _check_metric(metric)
        if backend not in ("numpy", "faiss"):
            raise ConfigError(f"unknown backend {backend!r}; expected 'numpy' or 'faiss'")
        if backend == "faiss" and not faiss_available():
            raise ConfigError("backend 'faiss' needs the optional package; in the celebalib folder run pip install -e '.[faiss]'")
        self.rows = _as_matrix(gallery, "gallery")
        self.metric, self.backend = metric, backend
        scaled = self.rows.astype(np.float32)
        if metric == "cosine":
            scaled = _unit_rows(scaled)
        # For cosine, ||g||^2 is taken as 1 for every row so that a zero row scores 2 (1 - 0).
        self._sq = np.ones(len(scaled), np.float32) if metric == "cosine" else np.einsum("ij,ij->i", scaled, scaled)
        self._max_sq = float(self._sq.max(initial=0.0))
        # Float32 dot products of D terms err by at most about D ulps of the norms involved;
        # twice that (plus the conversion to float32) bounds the error of one approximate distance.
        self._rounding = 2.0 * (self.rows.shape[1] + 2) * float(np.finfo(np.float32).eps)
        self._faiss = _faiss_index(scaled, metric) if backend == "faiss" else None
        self._columns = np.ascontiguousarray(scaled.T) if backend == "numpy" else None

    def __len__(self) -> int:
        return self.rows.shape[0]

    def search(self, query: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(indices, distances)`` of the k nearest rows: (k,) per vector, (Q, k) per batch."""
        single = np.ndim(query) == 1
        queries = _as_matrix(np.atleast_2d(query), "query")
        if queries.shape[1] != self.rows.shape[1]:
            raise ConfigError(f"query has {queries.shape[1]} values but gallery rows have {self.rows.shape[1]}")
        if int(k) < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        k = min(int(k), len(self))
        step = max(1, self.block_pairs // max(1, len(self)))
        # A query is a memory-bound matrix-vector product: one BLAS thread is as fast on an
        # idle machine and many times faster on a busy one, where threads wait for each other.
        with _blas_controller().limit(limits=1, user_api="blas"):
            parts = [self._search_block(queries[i:i + step], k) for i in range(0, len(queries), step)]
        indices = np.concatenate([p[0] for p in parts])
        squared = np.concatenate([p[1] for p in parts])
        distances = squared / 2.0 if self.metric == "cosine" else np.sqrt(squared)
        return (indices[0], distances[0]) if single else (indices, distances)

    def _approx(self, queries: np.ndarray) -> np.ndarray:
        """Float32 squared distances less ||q||^2 (constant per query): ||g||^2 - 2 q.g, (Q, N)."""
        q32 = queries.astype(np.float32)
        if self.metric == "cosine":
            q32 = _unit_rows(q32)
        # Scaling by -2 is exact in binary floating point, so it can go into the query.
        out = (q32 * np.float32(-2.0)) @ self._columns
        out += self._sq
        return out

    def _slack(self, queries: np.ndarray) -> np.ndarray:
        """Per query, how far float32 rounding can move an approximate squared distance."""
        q_sq = 1.0 if self.metric == "cosine" else np.einsum("ij,ij->i", queries, queries)
        return self._rounding * (q_sq + self._max_sq + 1.0) * np.ones(len(queries))

    def _search_block(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (squared distances) for a block of queries."""
        if self._faiss is not None:
            return self._search_faiss(queries, k)
        approx, slack = self._approx(queries), self._slack(queries)
        kth = np.partition(approx, k - 1, axis=1)[:, k - 1] if k < len(self) else np.full(len(queries), np.inf)
        indices = np.empty((len(queries), k), dtype=np.int64)
        squared = np.empty((len(queries), k), dtype=np.float64)
        for row, query in enumerate(queries):
            found = np.flatnonzero(approx[row] <= kth[row] + 2 * slack[row])
            indices[row], squared[row] = _exact_top(query, self.rows, found, k, self.metric == "cosine")
        return indices, squared

    def _search_faiss(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS flat-L2 candidates with a margin, re-scored like the numpy path."""
        q32 = np.ascontiguousarray(queries, dtype=np.float32)
        if self.metric == "cosine":
            q32 = _unit_rows(q32)
        wanted = min(len(self), 2 * k + 16)
        approx, found = self._faiss.search(q32, wanted)
        if self.metric == "cosine":
            approx = 2.0 * (1.0 - approx)  # inner products of unit vectors, as 2 (1 - cos)
        slack = self._slack(queries)
        indices = np.empty((len(queries), k), dtype=np.int64)
        squared = np.empty((len(queries), k), dtype=np.float64)
        for row, query in enumerate(queries):
            candidates = np.sort(found[row][found[row] >= 0])
            # Equal distances may continue past the margin: then score this query fully.
            if wanted < len(self) and approx[row, -1] <= approx[row, k - 1] + 2 * slack[row]:
                candidates = np.arange(len(self))
            indices[row], squared[row] = _exact_top(query, self.rows, candidates, k, self.metric == "cosine")
        return indices, squared


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """The thread-pool controller of the loaded BLAS libraries, found once."""
    return ThreadpoolController()


def _faiss_index(scaled: np.ndarray, metric: str) -> Any:
    """An exact FAISS flat index of the float32 gallery: L2, or inner product of unit rows for cosine."""
    import faiss

    index = faiss.IndexFlatIP(scaled.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(scaled.shape[1])
    index.add(np.ascontiguousarray(scaled, dtype=np.float32))
    return index


def top_k(query: Any, gallery: Any, k: int, metric: str = "euclidean", *,
          backend: str = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest gallery rows to one query (D,) or a batch (Q, D).

    Args:
        query: one vector (D,) or a batch (Q, D).
        gallery: (N, D) vectors.
        k: how many neighbours; clipped to N.
        metric: ``"euclidean"`` (L2 distance) or ``"cosine"`` (1 - cosine similarity).
        backend: ``"numpy"`` or ``"faiss"`` (optional package; same results).

    Returns:
        ``(indices, distances)``, shape (k,) for one query or (Q, k) for a batch, nearest
        first; equal distances are ordered by the lower gallery index. For repeated
        queries over one gallery, build a :class:`VectorSearch` once instead.
    """
    return VectorSearch(gallery, metric, backend=backend).search(query, k)


# ---------------------------------------------------------------------------------------
# The gallery index
# ---------------------------------------------------------------------------------------


def threshold_centred(probabilities: Any, thresholds: Any) -> np.ndarray:
    """Probabilities moved so that each attribute's threshold t lands on 0.5: sigmoid(logit p - logit t).

    Tuned thresholds often lie far from 0.5, in either direction, and for rare attributes mostly
    below it. Comparing raw probabilities with a 0/1 description would then call a face at 0.3 a
    "no" that a threshold of 0.14 calls a "yes" (and a face at 0.7 a "yes" that a threshold of
    0.8 calls a "no"); after this map, above 0.5 means above the attribute's own threshold. The
    order within each attribute is unchanged.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    t = np.clip(np.asarray(thresholds, dtype=np.float64), 1e-6, 1 - 1e-6)
    # sigmoid(logit p - logit t), written without logarithms so p = 0 and p = 1 stay exact.
    yes, no = p * (1.0 - t), (1.0 - p) * t
    return (yes / (yes + no)).astype(np.float32)


def description_matches(table: pd.DataFrame, wanted: Mapping[str, float]) -> pd.Series:
    """Whether each row's true labels agree with every attribute of a description, by image id."""
    missing = [name for name in wanted if name not in table.columns]
    if missing:
        raise ConfigError(f"description names {missing}, which the table lacks; expected CelebA attribute names")
    agree = np.ones(len(table), dtype=bool)
    for name, value in wanted.items():
        agree &= table[name].to_numpy() == int(round(float(value)))
    return pd.Series(agree, index=table["image_id"].to_numpy(), name="matches")


def parse_attributes(text: str) -> dict[str, int]:
    """Parse ``"Eyeglasses,Smiling,-Male"`` into ``{"Eyeglasses": 1, "Smiling": 1, "Male": 0}``."""
    from celebalib.attributes import attribute_index

    wanted: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        negative = part.startswith("-")
        name = ATTRIBUTES[attribute_index(part.lstrip("+-"))]
        wanted[name] = 0 if negative else 1
    if not wanted:
        raise ConfigError(f"no attributes in {text!r}; expected e.g. 'Eyeglasses,Smiling,-Male'")
    return wanted


def _check_same(path: Path, expected: Any, found: Any, what: str) -> None:
    """Raise RunError when an index's ``what`` differs from the run's."""
    if list(expected) != list(found):
        raise RunError(f"{path}: index was built for other {what} than this run uses; "
                       "rebuild it with `celebalib index`")


@dataclasses.dataclass(eq=False)  # arrays have no single truth value; compare fields directly
class GalleryIndex:
    """Predicted attribute vectors of one split, with what is needed to show and query them."""

    probabilities: np.ndarray  # (N, A) float32
    image_ids: np.ndarray  # (N,) unicode
    paths: np.ndarray  # (N,) unicode, absolute
    attributes: tuple[str, ...] = ATTRIBUTES
    run_id: str = ""
    split: str = ""
    features: np.ndarray | None = None  # (N, F) float32 pooled vectors, if built
    thresholds: np.ndarray | None = None  # (A,) decision thresholds for ``differs``

    def __post_init__(self) -> None:
        self.probabilities = np.asarray(self.probabilities, dtype=np.float32)
        self.image_ids = np.asarray(self.image_ids, dtype=str)
        self.paths = np.asarray(self.paths, dtype=str)
        self.attributes = tuple(str(a) for a in self.attributes)
        n, width = self.probabilities.shape
        if len(self.image_ids) != n or len(self.paths) != n or width != len(self.attributes):
            raise RunError(f"index arrays disagree: {n} vectors of {width}, {len(self.image_ids)} ids, "
                           f"{len(self.paths)} paths, {len(self.attributes)} attribute names")
        if self.thresholds is None:
            self.thresholds = np.full(width, 0.5, dtype=np.float32)
        self.thresholds = np.asarray(self.thresholds, dtype=np.float32)
        self._position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self._searchers: dict[tuple[str, str], VectorSearch] = {}

    def __len__(self) -> int:
        return len(self.image_ids)

    @classmethod
    def build(cls, run: Run, table: pd.DataFrame, split: str, *, limit: int | None = None,
              features: bool = False, progress: bool = True) -> GalleryIndex:
        """Predict every image of ``split`` (first ``limit`` rows) with ``run``.

        The predictions go through ``Run.predict_stored``, so an index of a split that
        ``evaluate`` has just scored with the same model and views costs no prediction pass.
        """
        rows = split_rows(table, split, limit)
        probabilities, _ = run.predict_stored(rows, split if limit is None else f"{split}_first{limit}",
                                              progress=progress)
        pooled = run.features(rows, progress=progress) if features else None
        return cls(probabilities=probabilities, image_ids=rows["image_id"].to_numpy(str),
                   paths=rows["path"].to_numpy(str), attributes=tuple(run.config.get("attributes", ATTRIBUTES)),
                   run_id=run.run_id, split=split, features=pooled, thresholds=run.thresholds)

    def save(self, path: str | Path) -> Path:
        """Write the index as a pickle-free ``.npz`` (atomically) and return its path."""
        arrays = {"format": np.array(INDEX_FORMAT), "probabilities": self.probabilities,
                  "image_ids": self.image_ids, "paths": self.paths,
                  "attributes": np.asarray(self.attributes, dtype=str), "run_id": np.array(self.run_id),
                  "split": np.array(self.split), "thresholds": self.thresholds}
        if self.features is not None:
            arrays["features"] = np.asarray(self.features, dtype=np.float32)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, *, run: Run | None = None, features: bool = True) -> GalleryIndex:
        """Read an index saved by :meth:`save`; with ``run``, check it was built by that run.

        ``features=False`` leaves the pooled feature vectors (if saved) on disk: searching by
        the probabilities, as the app does, never reads them.
        """
        path = Path(path)
        if not path.is_file():
            raise RunError(f"{path}: no index here; build one with `celebalib index --run RUN --split SPLIT`")
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) != INDEX_FORMAT:
                    raise RunError(f"{path}: index format {int(data['format'])}, expected {INDEX_FORMAT}")
                index = cls(probabilities=data["probabilities"], image_ids=data["image_ids"], paths=data["paths"],
                            attributes=tuple(data["attributes"]), run_id=str(data["run_id"]),
                            split=str(data["split"]), thresholds=data["thresholds"],
                            features=data["features"] if features and "features" in data else None)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            if isinstance(error, RunError):
                raise
            raise RunError(f"{path}: not a readable celebalib index ({error})") from None
        if run is not None:
            index.check_run(run, path)
        return index

    def check_run(self, run: Run, path: str | Path = "index") -> None:
        """Raise RunError unless this index was built by ``run`` for the same attributes."""
        if self.run_id != run.run_id:
            raise RunError(f"{path}: index was built by run {self.run_id!r}, not by {run.run_id!r}; "
                           "rebuild it with `celebalib index`")
        _check_same(Path(path), run.config.get("attributes", ATTRIBUTES), self.attributes, "attributes")

    # -- queries --------------------------------------------------------------------------

    def searcher(self, metric: str = "euclidean", space: str = "probabilities") -> VectorSearch:
        """The prepared search over probabilities or features, built on first use."""
        key = (space, metric)
        if key not in self._searchers:
            vectors = self._space(space)
            self._searchers[key] = VectorSearch(vectors, metric)
        return self._searchers[key]

    def _space(self, space: str) -> np.ndarray:
        """The vectors of one space, or ConfigError."""
        if space == "probabilities":
            return self.probabilities
        if space == "features" and self.features is not None:
            return self.features
        raise ConfigError(f"index has no {space!r} vectors; expected 'probabilities'"
                          + (" or 'features'" if self.features is not None else " (build with features=True)"))

    def position(self, image_id: str) -> int:
        """Row of a gallery image id, or ConfigError."""
        try:
            return self._position[image_id]
        except KeyError:
            example = str(self.image_ids[0]) if len(self) else "000001.jpg"
            raise ConfigError(f"image id {image_id!r} is not in the {self.split or 'gallery'} index "
                              f"({len(self)} images, e.g. {example!r})") from None

    def query_id(self, image_id: str, k: int = 10, metric: str = "euclidean", *,
                 space: str = "probabilities") -> pd.DataFrame:
        """The k nearest gallery images to a gallery image, leaving the image itself out."""
        row = self.position(image_id)
        vectors = self._space(space)
        found, distances = self.searcher(metric, space).search(vectors[row], min(k + 1, len(self)))
        keep = found != row
        return self._results(found[keep][:k], distances[keep][:k], self.probabilities[row])

    def query_vector(self, vector: Any, k: int = 10, metric: str = "euclidean", *,
                     space: str = "probabilities") -> pd.DataFrame:
        """The k nearest gallery images to a vector (40 probabilities, or a feature vector)."""
        vector = np.asarray(vector, dtype=np.float64).reshape(-1)
        found, distances = self.searcher(metric, space).search(vector, k)
        reference = vector if space == "probabilities" else None
        return self._results(found, distances, reference)

    def query_attributes(self, wanted: Mapping[str, float], k: int = 10,
                         metric: str = "euclidean") -> pd.DataFrame:
        """The k nearest images on the named attributes only (others are left out of the distance).

        The distance is taken over :func:`threshold_centred` probabilities, where 0.5 is each
        attribute's decision threshold, so "yes" means "above this attribute's threshold".
        """
        columns, values = self._attribute_query(wanted)
        centred = threshold_centred(self.probabilities[:, columns], self.thresholds[columns])
        found, distances = top_k(values, centred, k, metric)
        return self._results(found, distances, values, columns)

    def _attribute_query(self, wanted: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Columns and target values of an attribute description, or ConfigError."""
        if not wanted:
            raise ConfigError("attribute query is empty; name at least one attribute, e.g. {'Smiling': 1}")
        lookup = {name.lower(): i for i, name in enumerate(self.attributes)}
        columns, values = [], []
        for name, value in wanted.items():
            if str(name).lower() not in lookup:
                raise ConfigError(f"unknown attribute {name!r}; expected one of the index's names, e.g. 'Eyeglasses'")
            if not 0 <= float(value) <= 1:
                raise ConfigError(f"attribute {name!r} = {value!r}: expected 0 or 1 (or a probability in [0, 1])")
            columns.append(lookup[str(name).lower()])
            values.append(float(value))
        return np.asarray(columns), np.asarray(values)

    def query_image(self, run: Run, image: Any, k: int = 10, metric: str = "euclidean", *,
                    align: bool = False) -> pd.DataFrame:
        """The k nearest images to a photo (path or bytes, or an already preprocessed array), as in training.

        By default the photo is taken as an aligned face (such as a gallery image) and centre-cropped;
        ``align`` True first finds its largest face and aligns it onto CelebA's template
        (``predict.query_face``), as ``query --image`` and the explorer's upload do for your own photos.
        """
        from celebalib.predict import query_face

        self.check_run(run)
        if isinstance(image, np.ndarray):
            pixels = image
            if pixels.shape != (*run.image_shape, 3):
                raise ConfigError(f"image array of shape {pixels.shape}: expected a preprocessed "
                                  f"{(*run.image_shape, 3)} array, or pass the file or its bytes")
        else:
            pixels = query_face(run, image, align=align).pixels
        probabilities = np.asarray(run.predict_images(pixels[None]))[0]
        return self.query_vector(probabilities, k, metric)

    def _results(self, found: np.ndarray, distances: np.ndarray, reference: np.ndarray | None,
                 columns: np.ndarray | None = None) -> pd.DataFrame:
        """The result table: rank, image_id, path, distance, differs."""
        columns = np.arange(len(self.attributes)) if columns is None else columns
        names = np.asarray(self.attributes)[columns]
        if reference is None:
            differs = [""] * len(found)
        else:
            thresholds = self.thresholds[columns]
            mismatch = (self.probabilities[found][:, columns] >= thresholds) != (np.asarray(reference) >= thresholds)
            differs = [", ".join(names[row]) for row in mismatch]
        return pd.DataFrame({"rank": np.arange(1, len(found) + 1), "image_id": self.image_ids[found],
                             "path": self.paths[found], "distance": distances, "differs": differs})


# ---------------------------------------------------------------------------------------
# Command line: ``celebalib index`` and ``celebalib query``
# ---------------------------------------------------------------------------------------


def default_index_path(run_dir: str | Path, split: str) -> Path:
    """Where ``celebalib index`` writes by default: ``RUN/index_<split>.npz`` (``RunFiles.index``)."""
    from celebalib.runs import RunFiles

    return RunFiles(Path(run_dir)).index(split)


def configure_index_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``celebalib index``."""
    from celebalib.attributes import SPLITS
    from celebalib.bundles import RUN_SOURCES

    parser.epilog = "example:\n  python -m celebalib index --run runs/course --split val --limit 400"
    parser.add_argument("--run", required=True, help=f"{RUN_SOURCES}, e.g. runs/NAME")
    parser.add_argument("--data", default=None, help="CelebA root (default: the data the run was trained on)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split to index")
    parser.add_argument("--limit", type=int, default=None, help="index only the first N images of the split "
                        "(default: all)")
    parser.add_argument("--features", action="store_true", help="also store the pooled feature vectors")
    parser.add_argument("--out", default=None, help="output .npz (default: RUN/index_<split>.npz)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_index_command)


def _index_command(args: argparse.Namespace) -> int:
    """Build and save an index; print where it went."""
    from celebalib.data import load_celeba
    from celebalib.runs import open_run

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: expected a positive number of images")
    run = open_run(args.run)
    table = load_celeba(run.data_root(args.data))
    index = GalleryIndex.build(run, table, args.split, limit=args.limit, features=args.features,
                               progress=not args.quiet)
    out = index.save(args.out or default_index_path(run.path, args.split))
    print(f"indexed {len(index)} {args.split} images with run {run.run_id} -> {out}")
    return 0


def configure_query_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``celebalib query``."""
    from celebalib.attributes import SPLITS
    from celebalib.bundles import RUN_SOURCES

    parser.epilog = ("example:\n  python -m celebalib query --run runs/course --split val "
                     '--attributes "Eyeglasses,Smiling,-Male" -k 5')
    parser.add_argument("--run", required=True, help=f"{RUN_SOURCES}, e.g. runs/NAME")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", help="a photo to search with (JPEG or PNG)")
    what.add_argument("--like", metavar="ID", help="a gallery image id, e.g. 182638.jpg")
    what.add_argument("--attributes", help='wanted attributes, e.g. "Eyeglasses,Smiling,-Male"')
    parser.add_argument("-k", type=int, default=10, help="how many results")
    parser.add_argument("--split", default="test", choices=SPLITS, help="the split whose index to use, RUN/index_<split>.npz")
    parser.add_argument("--index", default=None, help=".npz index (default: RUN/index_<split>.npz)")
    parser.add_argument("--metric", default="euclidean", choices=METRICS, help="distance between "
                        "probability vectors")
    parser.add_argument("--no-align", dest="align", action="store_false",
                        help="with --image: use the whole photo, centre-cropped (for already aligned faces), "
                             "not its largest face aligned onto CelebA's template")
    parser.add_argument("--crop-out", metavar="PNG", default=None,
                        help="with --image: save the query as the model saw it (the aligned face, cropped)")
    parser.set_defaults(handler=_query_command)


def _query_command(args: argparse.Namespace) -> int:
    """Answer one query and print the result table."""
    from celebalib.runs import open_run

    if args.k < 1:
        raise ConfigError(f"-k {args.k}: expected at least 1")
    run = open_run(args.run)
    index = GalleryIndex.load(args.index or default_index_path(run.path, args.split), run=run)
    if args.image is not None:
        results = index.query_image(run, _image_query(run, args), args.k, args.metric)
    elif args.like is not None:
        results = index.query_id(args.like, args.k, args.metric)
    else:
        results = index.query_attributes(parse_attributes(args.attributes), args.k, args.metric)
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(results.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    return 0


def _image_query(run: Run, args: argparse.Namespace) -> np.ndarray:
    """The model input of ``--image``: say which face it is, and save it where ``--crop-out`` says."""
    from celebalib.predict import describe_face, query_face, save_pixels

    face = query_face(run, args.image, align=args.align)
    print(f"query: {args.image}, {describe_face(face)}")
    if args.crop_out:
        save_pixels(face.pixels, args.crop_out)
        print(f"the query as the model saw it -> {args.crop_out}")
    return face.pixels


# ---------------------------------------------------------------------------------------
# How good is the retrieval
# ---------------------------------------------------------------------------------------

# Two CelebA faces differ on about 11 of the 40 true labels on average; within 3 are about
# 1% of val-split pairs, yet 90% of val faces have at least 10 such neighbours there, so
# h = 3 separates a good ranking from a random one without being out of reach.
DEFAULT_MAX_HAMMING = 3


def neighbours_excluding_self(vectors: np.ndarray, queries: np.ndarray, k: int,
                              metric: str = "euclidean") -> np.ndarray:
    """Gallery rows of the k nearest neighbours of each query row, the row itself left out."""
    found, _ = VectorSearch(vectors, metric).search(vectors[queries], min(k + 1, len(vectors)))
    keep = found != np.asarray(queries)[:, None]
    # A row may be pushed out of its own list by equal vectors with lower indices.
    keep[keep.sum(axis=1) > k, -1] = False
    return found[keep].reshape(len(queries), -1)[:, :k]


def random_neighbours(n: int, queries: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k distinct random gallery rows per query, the query itself left out."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(n - 1, size=min(k, n - 1), replace=False) for _ in queries]
    # Shift picks at or after the query up by one, so every row but the query can be drawn.
    return np.stack([p + (p >= q) for p, q in zip(picks, queries, strict=True)])


def precision_at_k(neighbours: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                   max_hamming: int = DEFAULT_MAX_HAMMING) -> float:
    """Share of retrieved rows whose true label vector is within ``max_hamming`` of the query's."""
    truth = np.asarray(truth)
    distance = (truth[neighbours] != truth[np.asarray(queries)][:, None, :]).sum(axis=-1)
    return float((distance <= max_hamming).mean())


def same_person_rate(neighbours: np.ndarray, queries: np.ndarray, identities: np.ndarray) -> float:
    """Share of queries whose results hold another image of the same person.

    Only queries with a known identity (>= 0) that appears elsewhere in the gallery count;
    NaN when there are none.
    """
    identities = np.asarray(identities)
    counts = pd.Series(identities).value_counts()
    own = identities[np.asarray(queries)]
    eligible = (own >= 0) & (counts.reindex(own).to_numpy() > 1)
    if not eligible.any():
        return float("nan")
    hits = (identities[neighbours] == own[:, None]).any(axis=1)
    return float(hits[eligible].mean())


def evaluate_retrieval(index: GalleryIndex, table: pd.DataFrame, *, k: int = 10,
                       max_hamming: int = DEFAULT_MAX_HAMMING, queries: int = 1000,
                       metric: str = "euclidean", seed: int = 0) -> pd.DataFrame:
    """Precision@k and same-person rate of predicted, oracle (true) and random rankings.

    Args:
        index: the gallery; ``table`` supplies the true labels and identities of its images.
        queries: how many gallery images (drawn with ``seed``) serve as queries.

    Returns:
        One row per ranking with ``precision_at_k``, ``same_person_at_k``, and the settings.
    """
    rows = table.set_index("image_id").reindex(index.image_ids)
    if rows["path"].isna().any():
        missing = index.image_ids[rows["path"].isna().to_numpy()][0]
        raise ConfigError(f"image {missing!r} of the index is not in the table; pass the table it was built from")
    truth = rows[list(index.attributes)].to_numpy(np.int8)
    identities = rows["identity"].to_numpy(np.int64) if "identity" in rows else np.full(len(rows), -1)
    chosen = np.sort(np.random.default_rng(seed).choice(len(index), min(queries, len(index)), replace=False))
    rankings = {"predicted": neighbours_excluding_self(index.probabilities, chosen, k, metric),
                "oracle (true labels)": neighbours_excluding_self(truth.astype(np.float32), chosen, k, metric),
                "random": random_neighbours(len(index), chosen, k, seed)}
    if index.features is not None:
        rankings["pooled features"] = neighbours_excluding_self(index.features, chosen, k, metric)
    report = pd.DataFrame([{"ranking": name, "precision_at_k": precision_at_k(found, chosen, truth, max_hamming),
                            "same_person_at_k": same_person_rate(found, chosen, identities)}
                           for name, found in rankings.items()])
    return report.assign(k=k, max_hamming=max_hamming, queries=len(chosen), gallery=len(index), split=index.split)


def save_retrieval_report(report: pd.DataFrame, run_dir: str | Path) -> Path:
    """Write :func:`evaluate_retrieval`'s table to ``RUN/retrieval_<split>.json``, where ``demo`` reads it."""
    from celebalib.io import write_json
    from celebalib.runs import RunFiles

    split = str(report["split"].iloc[0]) if len(report) else "gallery"
    path = RunFiles(Path(run_dir)).retrieval(split)
    write_json(path, {"rankings": report.to_dict(orient="records")})
    return path
