"""A run in one file: the bundle ``export`` writes, and every ``--run`` reading it (or its address)
without trusting it. The address is served by Python's own ``http.server`` on localhost."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celebalib import bundles, demo, model_card, runs
from celebalib.cli import main


@pytest.fixture(scope="module")
def summarised_run(tiny_run: runs.Run, tmp_path_factory: pytest.TempPathFactory) -> runs.Run:
    """A copy of the tiny run with tuned thresholds, the small summaries evaluation and retrieval
    leave, and the big files a bundle leaves out (stored predictions, an index)."""
    folder = tmp_path_factory.mktemp("bundle") / "tiny"
    shutil.copytree(tiny_run.path, folder, ignore=shutil.ignore_patterns("logs"))
    run = runs.Run(folder)
    run.record_thresholds("balanced_accuracy", {name: 0.3 for name in run.record.attributes})
    files = run.files
    published = Path(__file__).resolve().parents[1] / "docs" / "results" / "course"
    shutil.copy(published / "eval_test.json", files.evaluation("val"))  # a real report, its split aside
    files.evaluation("val", ".csv").write_text("attribute,accuracy\nSmiling,0.5\n")
    shutil.copy(published / "retrieval_test.json", files.retrieval("val"))
    files.predictions("val").write_bytes(b"not needed")
    files.index("val").write_bytes(b"not needed")
    return run


@pytest.fixture(scope="module")
def bundle(summarised_run: runs.Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The summarised run exported by the command line as ``tiny.zip``."""
    out = tmp_path_factory.mktemp("bundle-out") / "tiny.zip"
    assert main(["export", "--run", str(summarised_run.path), "--out", str(out)]) == 0
    return out


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh CELEBALIB_HOME, so each test starts with an empty cache."""
    monkeypatch.setenv("CELEBALIB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def test_rows(synthetic_table: pd.DataFrame) -> pd.DataFrame:
    """Twelve synthetic test faces."""
    return synthetic_table[synthetic_table["split"] == "test"].head(12)


class TruncatingHandler(http.server.SimpleHTTPRequestHandler):
    """Announces a file's whole length but sends only its first half, then closes."""

    def do_GET(self) -> None:
        data = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.close_connection = True


@contextlib.contextmanager
def serving(folder: Path, handler: type = http.server.SimpleHTTPRequestHandler) -> Iterator[str]:
    """Serve ``folder`` on a free localhost port in a thread; yield its base URL, then stop."""
    quiet = type("Quiet", (handler,), {"log_message": lambda self, *args: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_contents(home: Path) -> list[str]:
    """Everything under the cache, hidden temporary folders included."""
    cache = home / bundles.CACHE
    return sorted(str(path.relative_to(cache)) for path in cache.rglob("*")) if cache.exists() else []


# ---------------------------------------------------------------------------------------
# Writing


def test_the_bundle_holds_the_model_record_and_summaries_with_their_sha256(bundle: Path,
                                                                        summarised_run: runs.Run) -> None:
    with zipfile.ZipFile(bundle) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert (manifest["format"], manifest["format_version"]) == ("celebalib-run-bundle", 1)
        assert manifest["run_id"] == summarised_run.run_id and manifest["model"] == "best.keras"
        names = [member["name"] for member in manifest["members"]]
        assert sorted(names) == ["MODEL_CARD.md", "best.keras", "config.json", "eval_val.csv", "eval_val.json",
                                 "history.csv", "retrieval_val.json"]  # no stored predictions, no index, no model.keras
        assert sorted(archive.namelist()) == sorted([*names, "manifest.json"])
        for member in manifest["members"]:
            data = archive.read(member["name"])
            assert (hashlib.sha256(data).hexdigest(), len(data)) == (member["sha256"], member["size"])
        record = runs.RunRecord.from_json(json.loads(archive.read("config.json")))
        card = archive.read("MODEL_CARD.md").decode()
    assert card == model_card.render_model_card(summarised_run.path) and "synthetic" in card
    assert record.thresholds == summarised_run.record.thresholds and record.settings == summarised_run.train_config
    assert record.facts.train_label_rates == summarised_run.record.facts.train_label_rates
    assert summarised_run.record.facts.data_root and record.facts.data_root is None  # the trainer's path stays home
    assert sorted(path.name for path in bundle.parent.iterdir()) == ["tiny.zip"]  # no temporary file left


def test_the_bundled_model_loads_with_plain_keras_without_celebalib(bundle: Path, summarised_run: runs.Run,
                                                                    tmp_path: Path) -> None:
    with zipfile.ZipFile(bundle) as archive:
        archive.extract("best.keras", tmp_path)
    images = np.random.default_rng(0).uniform(0, 255, (3, *summarised_run.image_shape, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    code = ("import sys, keras, numpy as np\n"
            "model = keras.saving.load_model(sys.argv[1])\n"
            "np.save(sys.argv[2], np.asarray(model(np.load(sys.argv[3]), training=False)))\n"
            "print(sorted(name for name in sys.modules if name.startswith('celebalib')))\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "best.keras"), str(tmp_path / "out.npy"),
                           str(tmp_path / "images.npy")], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # celebalib was never imported
    expected = np.asarray(summarised_run.model()(images, training=False))
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


@pytest.mark.parametrize("argv, expected", [
    (["--format", "keras-bundle"], "expected a file name ending in .zip for --format keras-bundle"),
    ([], "expected a file name ending in .zip or .onnx (or --format)"),
])
def test_the_format_and_the_file_name_must_agree(argv: list[str], expected: str, summarised_run: runs.Run,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.bin"
    assert main(["export", "--run", str(summarised_run.path), "--out", str(out), *argv]) == 1
    assert expected in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------------------
# Reading


def test_predictions_through_the_bundle_and_its_address_equal_the_folders(
        bundle: Path, summarised_run: runs.Run, test_rows: pd.DataFrame, home: Path) -> None:
    expected = summarised_run.predict(test_rows, progress=False)
    unpacked = runs.open_run(bundle)
    assert unpacked.path.parent == (home / bundles.CACHE).resolve()
    assert unpacked.path.name == f"tiny-{sha256(bundle)[:12]}" and unpacked.run_id == summarised_run.run_id
    through_bundle = unpacked.predict(test_rows, progress=False)
    # The bundle's model computes 1x1 convolutions with Keras's Conv2D, the run's as a matrix product
    # (model.Conv2D): the same sums, rounded in another order.
    np.testing.assert_allclose(through_bundle, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(unpacked.thresholds, summarised_run.thresholds)
    shutil.rmtree(unpacked.path)  # the address must download it afresh

    with serving(bundle.parent) as base:
        address = f"{base}/tiny.zip#sha256={sha256(bundle)}"
        downloaded = runs.open_run(address)
    assert downloaded.path == unpacked.path
    np.testing.assert_array_equal(downloaded.predict(test_rows, progress=False), through_bundle)
    # The server is stopped: a second use reads the cache without the network.
    again = runs.open_run(address)
    assert again.path == unpacked.path and again.run_id == summarised_run.run_id
    assert [name for name in cache_contents(home) if "/" not in name] == [unpacked.path.name]


def test_celebalib_run_names_the_run_notebooks_04_and_05_use(bundle: Path, home: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELEBALIB_RUN", raising=False)
    assert runs.run_from_environment() is None
    monkeypatch.setenv("CELEBALIB_RUN", str(bundle))
    run = demo.course_run()  # opens the bundle rather than training
    assert run.path.parent == (home / bundles.CACHE).resolve() and run.files.best.is_file()


def test_a_bundle_s_run_is_a_normal_run_folder_that_commands_write_into(
        bundle: Path, home: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["index", "--run", str(bundle), "--data", str(synthetic_root), "--split", "val", "--limit", "8", "--quiet"]
    assert main(argv) == 0
    folder = runs.open_run(bundle).path
    assert f"-> {folder / 'index_val.npz'}" in capsys.readouterr().out and (folder / "index_val.npz").is_file()


# ---------------------------------------------------------------------------------------
# Refusals: one line, exit 1, nothing kept in the cache


def rebundle(bundle: Path, out: Path, *, add: dict[str, bytes] | None = None, drop: tuple[str, ...] = (),
             manifest: bool = True, tamper: str | None = None) -> Path:
    """A copy of ``bundle`` with members added or dropped (listed in a manifest with their true
    sha256, or no manifest at all), or one member's bytes changed after its sha256 was taken."""
    members: dict[str, bytes] = {}
    with zipfile.ZipFile(bundle) as archive:
        for name in archive.namelist():
            if name not in (*drop, "manifest.json"):
                members[name] = archive.read(name)
    members.update(add or {})
    listed = [{"name": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
              for name, data in members.items()]
    if tamper:
        members[tamper] = members[tamper].replace(b"0.3", b"0.9")
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if manifest:
            archive.writestr("manifest.json", json.dumps({"format": bundles.FORMAT, "format_version": 1,
                                                          "model": bundles.MODEL, "members": listed}))
    return out


def lambda_model(path: Path) -> Path:
    """A .keras model holding Python code: a Lambda layer."""
    import keras

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(path)
    return path


@pytest.mark.parametrize("case", ["wrong checksum", "truncated download", "member ../x", "absolute member",
                                  "changed member", "lambda layer", "not a bundle", "not a zip"])
def test_an_untrusted_bundle_is_refused_in_one_line_and_nothing_is_kept(
        case: str, bundle: Path, home: Path, tmp_path: Path, test_rows: pd.DataFrame,
        capsys: pytest.CaptureFixture[str]) -> None:
    handler, digest, source = http.server.SimpleHTTPRequestHandler, sha256(bundle), None
    if case == "wrong checksum":
        digest, expected = "0" * 64, "the downloaded file's sha256 differs from the address's #sha256=0000"
    elif case == "truncated download":
        handler, expected = TruncatingHandler, "download failed (URL fetch failure"
    elif case == "member ../x":
        source, expected = rebundle(bundle, tmp_path / "x.zip", add={"../x": b"outside"}), "member '../x': expected"
    elif case == "absolute member":
        source, expected = rebundle(bundle, tmp_path / "x.zip", add={"/tmp/x": b"outside"}), "member '/tmp/x'"
    elif case == "changed member":
        source = rebundle(bundle, tmp_path / "x.zip", tamper="config.json")
        expected = "member config.json does not match the sha256 and size in manifest.json"
    elif case == "lambda layer":
        source = rebundle(bundle, tmp_path / "x.zip", add={"best.keras": lambda_model(tmp_path / "l.keras").read_bytes()})
        expected = "best.keras: Keras's safe mode refuses to load the model"
    elif case == "not a bundle":
        source, expected = rebundle(bundle, tmp_path / "x.zip", manifest=False), "no manifest.json; expected a run bundle"
    else:
        source = tmp_path / "x.zip"
        source.write_bytes(b"PK not really a zip")
        expected = "not a readable zip file; expected a run bundle"
    with contextlib.ExitStack() as stack:
        if source is None:
            base = stack.enter_context(serving(bundle.parent, handler))
            source = f"{base}/{bundle.name}#sha256={digest}"
        code = main(["predict", "--run", str(source), "--no-align", "--quiet", str(test_rows["path"].iloc[0])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("celebalib predict: error: "), err
    assert expected in err[0], err
    assert cache_contents(home) == []


def test_an_address_without_its_sha256_is_refused(home: Path) -> None:
    with pytest.raises(runs.RunError, match=r"expected an address like https://host/NAME.zip#sha256="):
        runs.open_run("http://127.0.0.1:9/tiny.zip")
