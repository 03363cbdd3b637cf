"""Evidence files of a run (celebalib.evidence) and their reader (celebalib.results)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest


def test_template_lands_where_the_crop_puts_it():
    from celebalib.evidence import template_in_frame
    from celebalib.faces import template

    # No crop and the template's own size: the points are the template's.
    assert np.allclose(template_in_frame((218, 178), "none"), template())
    # The centre crop keeps rows 20..198 of 218, then halves: an eye at y=111.35 lands at (111.35-20)/2.
    centre = template_in_frame((89, 89), "center")
    assert centre[0, 1] == pytest.approx((template()[0, 1] - 20) / 2)
    assert centre[0, 0] == pytest.approx(template()[0, 0] / 2)


def test_face_regions_follow_the_landmarks():
    from celebalib.evidence import face_region
    from celebalib.faces import template

    points = template()
    (left_x, eye_y), nose_y, mouth_y = points[0], points[2, 1], points[3:, 1].mean()
    assert face_region(points[2, 0], eye_y, points) == "eyes"
    assert face_region(points[2, 0], mouth_y, points) == "mouth"
    assert face_region(points[2, 0], nose_y, points) == "nose"
    assert face_region(points[2, 0], 10, points) == "above the eyes"
    assert face_region(points[2, 0], 210, points) == "below the mouth"
    assert face_region(2, eye_y, points) == "side, eyes"


def test_grad_cams_of_a_batch_equal_one_at_a_time(tiny_run, synthetic_table):
    from celebalib import gradcam

    model = tiny_run.model()
    rows = synthetic_table[synthetic_table["split"] == "val"].head(3)
    images = np.concatenate([batch.numpy() for batch in tiny_run.images(rows)])
    batch = gradcam.grad_cams(model, images, "Smiling")
    singles = np.stack([gradcam.grad_cam(model, image, "Smiling") for image in images])
    assert batch.shape == (3, *images.shape[1:3])
    assert np.allclose(batch, singles, atol=1e-5)


def test_write_evidence_then_read_it_back(tiny_run, synthetic_table, tmp_path):
    from celebalib import evidence, model_card, results, runs

    # A copy: computing the evaluation stores tuned thresholds in the run, and tiny_run is shared.
    shutil.copytree(tiny_run.path, tmp_path / "run")
    run = runs.open_run(tmp_path / "run")
    run.record_budget_end(1)  # progress a flat config.json would lose
    out = tmp_path / "tiny-evidence"
    written = evidence.write_evidence(run, synthetic_table, out, faces=5, progress=False)
    names = {path.name for path in written}
    assert {"config.json", "history.csv", "eval_val.json", "retrieval_val.json", "label_rates_train.csv",
            "gradcam_val.json", "gradcam_val.npz", "gradcam_val.png", "astronaut.json", "MODEL_CARD.md"} <= names
    # The committed record reads back as the run's own settings and thresholds.
    assert runs.load_record(out / "config.json").settings == run.record.settings
    assert runs.load_record(out / "config.json").thresholds == runs.read_record(run.path).thresholds
    assert (out / "MODEL_CARD.md").read_text() == model_card.render_model_card(out)
    # No file is an image of a face: the one PNG is the template figure, the arrays are mean maps.
    assert [path.suffix for path in written].count(".png") == 1
    found = results.open_evidence("tiny-evidence", folder=tmp_path)
    assert found.evaluation("val")["n_images"] == (synthetic_table["split"] == "val").sum()
    assert list(found.retrieval("val").index[:3]) == ["predicted", "oracle (true labels)", "random"]
    assert len(found.history()) == 2 and found.history()["seconds"].gt(0).all()
    assert found.minutes() == pytest.approx(found.history()["seconds"].sum() / 60)
    rates = found.label_rates()
    train = synthetic_table[synthetic_table["split"] == "train"]
    assert len(rates) == 40 and (rates["images"] == len(train)).all()
    assert rates.at["Smiling", "positives"] == train["Smiling"].sum()
    cams = found.gradcam()
    assert cams["maps"].shape == (40, *run.image_shape)
    assert cams["maps"].min() >= 0 and cams["maps"].max() <= 1
    # At most 5 faces per attribute, each labelled with it: none where the split has no such face.
    assert cams["table"]["faces"].between(0, 5).all() and cams["table"]["faces"].gt(0).any()
    astronaut = found.astronaut()
    assert len(astronaut) == 40 and set(astronaut["answer"]) <= {"yes", "no"}
    assert ((astronaut["probability"] >= astronaut["threshold"]) == (astronaut["answer"] == "yes")).all()
    config = json.loads((out / "config.json").read_text())
    assert config["schema_version"] == runs.SCHEMA_VERSION  # the run's own record, not a flat copy
    assert "/" not in str(config["facts"]["data_root"])  # no machine path in a committed file
    record = found.record
    assert record.settings == run.record.settings and record.progress == run.record.progress
    assert (record.progress.budget_end, record.end_epoch, record.settings.epochs) == (1, 1, 2)
    assert record.thresholds is not None and len(record.thresholds.values) == 40  # tuned by the evaluation
    assert f"{record.settings.optimizer} at {record.settings.learning_rate}" in found.describe()
    assert "/" not in str(json.loads((out / "eval_val.json").read_text())["data_root"])
    assert results.attribute_table(found.evaluation("val")).shape[0] == 40


def test_hit_miss_false_alarm_picks_the_clearest_of_each():
    import pandas as pd

    from celebalib.evidence import hit_miss_false_alarm

    index = ["a", "b", "c", "d", "e"]
    labelled = pd.Series([1, 1, 1, 0, 0], index=index)
    probabilities = pd.Series([0.9, 0.6, 0.1, 0.8, 0.2], index=index)
    said = probabilities >= 0.5
    assert hit_miss_false_alarm(labelled, said, probabilities) == {"hit": "a", "miss": "c", "false alarm": "d"}
    none = hit_miss_false_alarm(labelled, probabilities >= 0.0, probabilities)
    assert none["miss"] is None and none["false alarm"] == "d"


def test_committed_evidence_reads():
    from celebalib import results

    found = results.open_evidence("celeba-cpu")
    assert found.evaluation("val")["n_images"] == 4535
    rates = found.label_rates()
    assert rates["positive_rate"].between(0, 1).all() and (rates["images"] == 162_770).all()
    record = found.record
    assert record.settings.crop == "portrait" and record.end_epoch <= record.settings.epochs
    assert f"; {record.settings.optimizer} at " in found.describe()
    for name in ("course", "opt-adam", "opt-adadelta"):  # every committed folder reads as a typed record
        assert results.open_evidence(name).record.run_id.startswith(name)


def test_schema_1_evidence_reads_as_a_record(tmp_path):
    """A flat schema 1 config.json (as docs/results held before schema 2) migrates: the budget's end
    (``epochs``) and the epochs asked for (``planned_epochs``) land in progress and settings."""
    from celebalib import results

    flat = json.loads((results.RESULTS_DIR / "opt-adam" / "config.json").read_text())
    assert flat["schema_version"] == 1
    flat.update(epochs=25, planned_epochs=28, time_budget=80.0, budget_seconds=4074.9)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(flat))
    found = results.open_evidence("old", folder=tmp_path)
    record = found.record
    assert (record.settings.epochs, record.progress.budget_end, record.end_epoch) == (28, 25, 25)
    assert record.settings.time_budget == 80.0 and record.progress.seconds == pytest.approx(4074.9)
    assert found.epochs() == 25  # no history.csv: the epochs the record says were done
    assert found.minutes() == pytest.approx((pd.Timestamp(flat["finished"]) - pd.Timestamp(flat["created"]))
                                            .total_seconds() / 60)
    assert "adam at 0.001" in found.describe()


def test_damaged_evidence_record_is_a_one_line_error(tmp_path):
    from celebalib import results
    from celebalib.errors import RunError

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"schema_version": 2,\n "run_id": ')
    with pytest.raises(RunError, match=r"broken/config.json:2: invalid JSON"):
        results.open_evidence("broken", folder=tmp_path).record


def test_missing_evidence_is_a_clear_error(tmp_path):
    from celebalib import results
    from celebalib.errors import RunError

    with pytest.raises(RunError, match="no committed evidence of run 'nothing'"):
        results.open_evidence("nothing", folder=tmp_path)


def test_script_rejects_bad_faces(capsys):
    import runpy
    import sys

    sys.argv = ["real_evidence.py", "RUN", "--data", "ROOT", "--out", "OUT", "--faces", "0"]
    with pytest.raises(SystemExit) as stop:
        runpy.run_path("scripts/real_evidence.py", run_name="__main__")
    assert stop.value.code == 2
    assert "--faces 0" in capsys.readouterr().err


def test_own_evidence_replaces_the_committed_only_where_it_was_written(tmp_path):
    """With real data set, runs/NAME/evidence (the script's output) is read; a bare run folder is not."""
    from types import SimpleNamespace

    from celebalib import results

    committed, runs_dir = tmp_path / "committed", tmp_path / "runs"
    (committed / "celeba-cpu").mkdir(parents=True)
    (committed / "celeba-cpu" / "config.json").write_text("{}")
    settings = SimpleNamespace(uses_real_data=True, fast=False, runs_dir=runs_dir)
    (runs_dir / "celeba-cpu").mkdir(parents=True)
    (runs_dir / "celeba-cpu" / "config.json").write_text("{}")  # a trained run, no evidence written
    assert results.open_evidence("celeba-cpu", settings, folder=committed).path == committed / "celeba-cpu"
    own = results.own_evidence(runs_dir, "celeba-cpu")
    own.mkdir()
    (own / "config.json").write_text("{}")
    (own / results.GRADCAM_MAPS).write_bytes(b"")
    assert results.open_evidence("celeba-cpu", settings, folder=committed).path == own
    fast = SimpleNamespace(uses_real_data=True, fast=True, runs_dir=runs_dir)
    assert results.open_evidence("celeba-cpu", fast, folder=committed).path == committed / "celeba-cpu"
