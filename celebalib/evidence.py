"""Turn a trained run into face-free evidence files that can be committed (``docs/results/<name>/``).

A run trained on genuine CelebA cannot be committed (its images are licensed, and its
weights are large), but what it measured can: its record (settings, progress, thresholds, as
its own config.json holds it), its per-epoch history, its evaluation and retrieval reports,
its train split's label rates, Grad-CAM maps averaged over many faces and drawn on CelebA's
landmark template (no face pixels), its answers for one public-domain photo, and its model
card (``MODEL_CARD.md``, drawn from those files).
``celebalib.results`` reads them back for the notebooks.
Run it as ``python scripts/real_evidence.py RUN --data ROOT --out docs/results/NAME``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from celebalib import model_card, results
from celebalib.attributes import ATTRIBUTES
from celebalib.errors import ConfigError
from celebalib.io import atomic_path, write_json, write_text
from celebalib.runs import RunFiles, RunRecord

# The public-domain photo (NASA's portrait of Eileen Collins) that scikit-image ships.
ASTRONAUT = "skimage.data.astronaut() (NASA portrait of Eileen Collins, public domain)"


def template_in_frame(image_shape: tuple[int, int], crop: str) -> np.ndarray:
    """CelebA's five template landmarks (5, 2) as (x, y) in the model's input frame of an aligned
    178x218 image after the run's crop and resize (``data.decode_image``)."""
    from celebalib.data import PORTRAIT_ASPECT
    from celebalib.faces import template

    height, width = image_shape
    keep_rows, keep_columns = results.TEMPLATE_SIZE[1], results.TEMPLATE_SIZE[0]
    if crop != "none":
        aspect = 1.0 if crop == "center" else PORTRAIT_ASPECT
        keep_rows = min(keep_rows, round(results.TEMPLATE_SIZE[0] * aspect))
        keep_columns = min(keep_columns, round(results.TEMPLATE_SIZE[1] / aspect))
    top, left = (results.TEMPLATE_SIZE[1] - keep_rows) // 2, (results.TEMPLATE_SIZE[0] - keep_columns) // 2
    points = np.asarray(template(), dtype=np.float64) - [left, top]
    return points * [width / keep_columns, height / keep_rows]


def epoch_seconds(run_path: Path, created: str | None) -> list[float] | None:
    """Wall-clock seconds of each epoch from the run's TensorBoard log (the first epoch from the run's
    creation, so it includes start-up and graph tracing); None when the log holds no epoch."""
    import tensorflow as tf

    ends: dict[int, float] = {}
    for path in sorted((RunFiles(run_path).logs / "train").glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if any(value.tag == "epoch_loss" for value in event.summary.value):
                ends[int(event.step)] = float(event.wall_time)
    if not ends:
        return None
    times = [ends[step] for step in sorted(ends)]
    start = dt.datetime.fromisoformat(created).timestamp() if created else times[0]
    return list(np.diff([start, *times]).round(1))


def history_with_seconds(run: Any) -> pd.DataFrame:
    """The run's history.csv, with a ``seconds`` column (per-epoch wall clock) where the log gives it."""
    history = run.history()
    seconds = epoch_seconds(run.path, run.record.created or None)
    if seconds is not None and len(seconds) == len(history):
        history = history.assign(seconds=seconds)
    return history


def label_rate_table(table: pd.DataFrame) -> pd.DataFrame:
    """Positives, images and positive rate per attribute over every train row of the annotations of
    ``table``'s root (images present or not; as the run's baseline counts them), else of ``table``."""
    from celebalib.data import load_celeba

    root = table.attrs.get("root")
    annotations = load_celeba(root, images=False) if root and Path(root).is_dir() else table
    rows = annotations[annotations["split"] == "train"]
    positives = rows[list(ATTRIBUTES)].sum()
    return pd.DataFrame({"positives": positives, "images": len(rows),
                         "positive_rate": (positives / len(rows)).round(6)}).rename_axis("attribute")


def gradcam_candidates(table: pd.DataFrame, attribute: str, n: int, splits: Sequence[str],
                       seed: int = 0) -> pd.DataFrame:
    """Up to ``n`` rows labelled with ``attribute``, taken from ``splits`` in order, at random within each."""
    chosen = []
    for split in splits:
        rows = table[(table["split"] == split) & (table[attribute] == 1)]
        chosen.append(rows.sample(frac=1.0, random_state=seed))
    return pd.concat(chosen).head(n)


def mean_gradcams(run: Any, table: pd.DataFrame, *, faces: int = 200, attributes: Sequence[str] = ATTRIBUTES,
                  splits: Sequence[str] = ("val", "train"), min_cells: int = 8, batch_size: int = 32,
                  seed: int = 0) -> dict[str, Any]:
    """Grad-CAM averaged per attribute over up to ``faces`` faces labelled with it and predicted yes.

    Faces come from ``splits`` in order (val first; train where val has too few), are predicted
    on the plain image (no test-time views) and kept where the probability reaches the run's
    threshold. Each map is normalised to [0, 1] before averaging, so every face counts once.

    Returns:
        ``maps`` (K, H, W) in the model's input frame, ``counts`` {attribute: {split: faces}},
        ``layer`` (the feature map weighted) and ``attributes``.
    """
    from celebalib import gradcam

    model = run.model()
    layer = gradcam.feature_layer(model, min_cells)
    pools = {name: gradcam_candidates(table, name, 2 * faces, splits, seed) for name in attributes}
    union = pd.concat(pools.values()).drop_duplicates("image_id")
    probabilities = pd.DataFrame(run.predict(union, progress=False, flip=False, shift=0),
                                 index=union["image_id"].to_numpy(), columns=list(ATTRIBUTES))
    thresholds = pd.Series(run.thresholds, index=list(ATTRIBUTES))
    maps, counts = [], {}
    for name in attributes:
        pool = pools[name]
        kept = pool[probabilities.loc[pool["image_id"], name].to_numpy() >= thresholds[name]].head(faces)
        counts[name] = {str(split): int(count) for split, count in kept["split"].value_counts().items()}
        total = np.zeros(run.image_shape, dtype=np.float64)
        for start in range(0, len(kept), batch_size):
            images = np.stack([image.numpy() for image in run.images(kept.iloc[start:start + batch_size]).unbatch()])
            total += gradcam.grad_cams(model, images, name, layer=layer).sum(axis=0)
        maps.append(total / max(len(kept), 1))
    return {"maps": np.stack(maps).astype(np.float32), "counts": counts, "layer": layer,
            "attributes": list(attributes)}


def face_region(x: float, y: float, points: np.ndarray) -> str:
    """Where (x, y) lies on a face with these five template landmarks: "above the eyes", "eyes", "nose",
    "mouth" or "below the mouth" by height, with "side, " in front beyond the eyes' outer reach."""
    eyes, nose, mouth = points[:2, 1].mean(), points[2, 1], points[3:, 1].mean()
    bands = [(eyes - (nose - eyes) / 2, "above the eyes"), ((eyes + nose) / 2, "eyes"), ((nose + mouth) / 2, "nose"),
             (mouth + (mouth - nose) / 2, "mouth")]
    band = next((name for limit, name in bands if y < limit), "below the mouth")
    reach = (points[1, 0] - points[0, 0]) / 2
    return ("side, " if x < points[0, 0] - reach or x > points[1, 0] + reach else "") + band


def gradcam_summary(found: dict[str, Any], points: np.ndarray, split_note: str) -> dict[str, Any]:
    """JSON of ``mean_gradcams``' result: per attribute the faces used, the peak of the mean map (as shares
    of the frame's width and height) and the face region it lies in (``face_region``; None without faces)."""
    maps = found["maps"]
    height, width = maps.shape[1:]
    rows = []
    for name, heat in zip(found["attributes"], maps):
        faces = int(sum(found["counts"][name].values()))
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        rows.append({"attribute": name, "faces": faces, "faces_by_split": found["counts"][name],
                     "peak_x": round(float(x) / width, 3), "peak_y": round(float(y) / height, 3),
                     "region": face_region(float(x), float(y), points) if faces else None})
    return {"layer": found["layer"], "frame": [int(height), int(width)], "selection": split_note,
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in points], "attributes": rows}


def hit_miss_false_alarm(labelled: pd.Series, said: pd.Series, probabilities: pd.Series) -> dict[str, Any]:
    """For one attribute over indexed faces, the clearest example of each outcome (None where there is none):
    ``hit`` (labelled, said yes; highest probability), ``miss`` (labelled, said no; lowest) and
    ``false alarm`` (not labelled, said yes; highest)."""
    labelled, said = labelled.astype(bool), said.astype(bool)
    cases = {"hit": (labelled & said, False), "miss": (labelled & ~said, True), "false alarm": (~labelled & said, False)}
    return {case: (probabilities[rows].sort_values(ascending=lowest).index[0] if rows.any() else None)
            for case, (rows, lowest) in cases.items()}


def astronaut_answers(run: Any) -> dict[str, Any]:
    """The run's 40 answers for ``skimage.data.astronaut()``'s face, detected and aligned as
    ``predict.prepare_photo`` does for any photo (probabilities, thresholds, yes/no)."""
    from skimage import data as sample_photos

    from celebalib import predict

    prepared = predict.prepare_photo(run, sample_photos.astronaut())
    if not prepared:
        raise ConfigError("skimage.data.astronaut(): no face found; expected the detector to find her face")
    answers = predict.face_attributes(run, prepared[0])
    return {"photo": ASTRONAUT, "face": predict.describe_face(prepared[0]), "thresholds": predict.thresholds_note(run),
            "answers": [{"attribute": row.attribute, "probability": float(row.probability),
                         "threshold": float(row.threshold), "answer": row.answer}
                        for row in answers.itertuples()]}


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """A report's contents without the machine's data path (``data_root`` becomes its folder name)."""
    public = dict(config)
    if public.get("data_root"):
        public["data_root"] = Path(str(public["data_root"])).name
    return public


def public_record(record: RunRecord) -> dict[str, Any]:
    """The run's record as its own config.json holds it (schema 2, progress included), with the data
    path reduced to its folder name."""
    return record.with_data_root(Path(record.facts.data_root).name if record.facts.data_root else None).to_json()


def _copy_or_compute(run: Any, name: str, out: Path, compute: Any) -> None:
    """Copy ``name`` from the run folder into ``out``, or write it with ``compute()`` where the run has none."""
    source = run.path / name
    if source.is_file():
        with atomic_path(out / name) as tmp:
            shutil.copyfile(source, tmp)
    else:
        compute()


def write_evidence(run: Any, table: pd.DataFrame, out: str | Path, *, faces: int = 200, split: str = "val",
                   progress: bool = True) -> list[Path]:
    """Write the run's face-free evidence files into ``out`` (see the module docstring); return them."""
    from celebalib import evaluate, plots, retrieval, runs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *args, **kwargs: None)
    say(f"{run.path.name}: evaluation on {split}")
    names = RunFiles(Path())
    evaluation = names.evaluation(split).name
    _copy_or_compute(run, evaluation, out, lambda: write_json(
        out / evaluation, evaluate.evaluation_json(evaluate.evaluate_run(run, table, split, progress=False))))
    report = json.loads((out / evaluation).read_text(encoding="utf-8"))
    write_json(out / evaluation, public_config(report))  # its data_root too, reduced to the folder name
    run = runs.open_run(run.path)  # evaluation stores tuned thresholds in config.json: read them
    say(f"{run.path.name}: retrieval on {split}")

    def retrieval_report() -> None:
        index = retrieval.GalleryIndex.build(run, table, split, features=True, progress=False)
        retrieval.save_retrieval_report(retrieval.evaluate_retrieval(index, table, k=10), out)

    _copy_or_compute(run, names.retrieval(split).name, out, retrieval_report)
    write_json(out / names.config.name, public_record(run.record))
    write_text(out / names.history.name, history_with_seconds(run).to_csv(index=False))
    write_text(out / results.LABEL_RATES, label_rate_table(table).to_csv())
    say(f"{run.path.name}: Grad-CAM over up to {faces} faces per attribute")
    found = mean_gradcams(run, table, faces=faces, splits=(split, "train"))
    points = template_in_frame(run.image_shape, run.crop)
    summary = gradcam_summary(found, points, f"faces labelled with the attribute and predicted yes, {split} "
                              f"first, then train; up to {faces} per attribute")
    write_json(out / results.GRADCAM_JSON, summary)
    with atomic_path(out / results.GRADCAM_MAPS) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, maps=np.round(found["maps"] * 255).astype(np.uint8),
                            attributes=np.array(found["attributes"]))
    view = results.gradcam_view(summary, found["maps"])
    plots.save_figure(plots.template_heatmaps(view, title=f"{run.path.name}: mean Grad-CAM, {split} first"),
                      out / results.GRADCAM_PNG)
    say(f"{run.path.name}: the astronaut")
    write_json(out / results.ASTRONAUT, astronaut_answers(run))
    model_card.write_model_card(out)
    return sorted(path for path in out.iterdir() if path.is_file())

