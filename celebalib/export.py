"""A trained run for use elsewhere: one ``.zip`` bundle of the run, or its model as ONNX.

:func:`write_bundle` packs what the run needs to predict into one file (:mod:`celebalib.bundles`
reads it back): the model saved with Keras's own layers, so ``keras.saving.load_model`` loads it
without celebalib, the run's record, its evaluation and retrieval summaries, and a manifest of
every member's sha256. Any ``--run`` takes such a file, or its address, in place of the folder.

:func:`export_onnx` writes the run's model with Keras's own layers (``model.with_keras_layers``)
and without its training-only augmentation layers (``model.inference_model``), through Keras's
``model.export(format="onnx")`` (which uses tf2onnx). The file's metadata (ONNX
``metadata_props``) records what a user needs to read its output: the 40 attribute names in
output order, the run's decision thresholds, the input's shape and scale, and the test-time
views celebalib averages. ``python -m celebalib export`` is its command line; the packages
come with the ``export`` extra (in the celebalib folder, ``pip install -e '.[export]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celebalib import __version__
from celebalib.attributes import ATTRIBUTES
from celebalib.errors import ConfigError, RunError

if TYPE_CHECKING:
    from celebalib.runs import Run

# Each export format and the file name ending it writes.
FORMATS = {"keras-bundle": ".zip", "onnx": ".onnx"}
INPUT_NAME = "images"
INSTALL_HINT = "in the celebalib folder, pip install -e '.[export]'"


def write_bundle(run: Run, out: str | Path, *, which: str = "best") -> dict[str, Any]:
    """Write the run as one bundle at ``out`` (``bundles.pack``), atomically; return its manifest.

    The ``which`` model becomes the bundle's ``best.keras``, rebuilt with Keras's own layers and
    without its training's loss and metrics (celebalib's classes), so plain Keras loads it. The
    record leaves out ``data_root``, a path on the machine that trained, so a user's run reads the
    data their own settings name. The run's model card (``model_card.render_model_card``) goes in
    as ``MODEL_CARD.md``.
    """
    from celebalib import bundles
    from celebalib.attributes import SPLITS
    from celebalib.model import export_keras_layers
    from celebalib.model_card import render_model_card
    from celebalib.runs import load_model

    files = run.files
    record = run.record.with_data_root(None)
    summaries = [files.history, files.about(), *(files.retrieval(split) for split in SPLITS),
                 *(files.evaluation(split, suffix) for split in SPLITS for suffix in (".json", ".csv"))]
    with tempfile.TemporaryDirectory(prefix="celebalib-bundle-") as folder:
        model = export_keras_layers(load_model(run.model_file(which), compile=False), Path(folder) / bundles.MODEL)
        members: dict[str, Path | bytes] = {bundles.MODEL: model,
                                           files.config.name: (json.dumps(record.to_json(), indent=2) + "\n").encode()}
        members.update({path.name: path for path in summaries if path.is_file()})
        members[files.model_card.name] = render_model_card(run.path).encode()
        info = {"run_id": run.run_id, "model_source": run.model_file(which).name, "celebalib_version": __version__}
        return bundles.pack(out, members, info)


def export_metadata(run: Run, which: str = "best") -> dict[str, str]:
    """What an exported model records about itself (every value a string, as ONNX metadata holds)."""
    from celebalib.predict import thresholds_note
    from celebalib.runs import describe_views

    height, width = run.image_shape
    views = run.views()
    return {
        "attributes": json.dumps(list(ATTRIBUTES)),
        "thresholds": json.dumps([round(float(value), 6) for value in run.thresholds]),
        "thresholds_note": thresholds_note(run),
        "input": f"{INPUT_NAME}: float32 (N, {height}, {width}, 3), RGB values 0-255: a face aligned onto CelebA's "
                 f"178x218 template, then the {run.crop!r} crop resized to {width}x{height} "
                 f"(celebalib.predict.prepare_photo makes it)",
        "output": "probabilities (N, 40) in the order of 'attributes'; an attribute is present where its "
                  "probability is at least its threshold",
        "views": json.dumps([list(view) for view in views]),
        "views_note": f"celebalib averages the probabilities of {len(views)} view(s) of each face: "
                      f"{describe_views(views)}. 'views' lists them as [dx, dy, mirrored]: the image moved "
                      "right by dx and down by dy whole pixels with the edge mirrored in, then mirrored "
                      "left to right where mirrored is true",
        "run_id": run.run_id,
        "model_file": run.model_file(which).name,
        "celebalib_version": __version__,
    }


def export_onnx(run: Run, out: str | Path, *, which: str = "best", opset: int | None = None) -> Path:
    """Write the run's ``which`` model ("best" or "final") to ``out`` as ONNX, atomically, with
    :func:`export_metadata` in its ``metadata_props``; return ``out``."""
    onnx = _import_onnx()
    import tensorflow as tf

    from celebalib.io import atomic_path
    from celebalib.model import inference_model, with_keras_layers

    out = Path(out)
    # Keras's own layers convert to plain Conv nodes, which onnxruntime fuses with their batch norm.
    model = inference_model(with_keras_layers(run.model(which)))
    signature = [tf.TensorSpec((None, *run.image_shape, 3), tf.float32, name=INPUT_NAME)]
    with tempfile.TemporaryDirectory(prefix="celebalib-export-") as folder, _quiet_converter():
        converted = Path(folder) / "model.onnx"
        model.export(str(converted), format="onnx", verbose=False, input_signature=signature, opset_version=opset)
        proto = onnx.load(converted)
    onnx.helper.set_model_props(proto, export_metadata(run, which))
    proto.doc_string = f"celebalib {__version__}: the 40 CelebA face attributes from run {run.run_id}"
    with atomic_path(out) as tmp:
        onnx.save(proto, tmp)
    return out


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, as a dict."""
    onnx = _import_onnx()
    return {entry.key: entry.value for entry in onnx.load(Path(path), load_external_data=False).metadata_props}


def _import_onnx():
    """The ``onnx`` module, or a ConfigError saying how to install it."""
    try:
        import onnx
        import tf2onnx  # noqa: F401 (Keras's ONNX export imports it)
    except ImportError as error:
        raise ConfigError(f"ONNX export needs the {error.name} package: {INSTALL_HINT}") from None
    return onnx


@contextlib.contextmanager
def _quiet_converter() -> Iterator[None]:
    """Hide tf2onnx's per-node log lines and the NumPy deprecation warnings of its patching while converting."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------------------------------
# Command line: ``celebalib export``
# ---------------------------------------------------------------------------------------

EXAMPLE = """example:
  python -m celebalib export --run runs/celeba-cpu --out celeba-cpu.zip
  python -m celebalib export --run runs/celeba-cpu --out celeba-cpu.onnx

A .zip bundle is the run in one file: any --run takes it (predict, query, evaluate, index, app),
or its address once it is online, https://.../celeba-cpu.zip#sha256=<the sha256 printed here>.
Its best.keras loads without celebalib: keras.saving.load_model("best.keras").

An .onnx file's metadata (onnx metadata_props) holds the attribute names in output order, the
run's thresholds, the input's shape and scale and the test-time views; with onnxruntime:
  session = onnxruntime.InferenceSession("celeba-cpu.onnx")
  probabilities = session.run(None, {"images": faces})[0]"""


def configure_export_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``celebalib export``."""
    from celebalib.bundles import RUN_SOURCES

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLE
    parser.description = ("Write a trained run as one .zip bundle (its Keras model, record, evaluation and\n"
                          "retrieval summaries, and a manifest of their sha256), or its model as ONNX with\n"
                          "the attribute names and thresholds in its metadata. ONNX needs the export extra:\n"
                          f"{INSTALL_HINT}.")
    parser.add_argument("--run", required=True, help=f"{RUN_SOURCES}, e.g. runs/celeba-cpu")
    parser.add_argument("--out", required=True, help="file to write, e.g. celeba-cpu.zip or celeba-cpu.onnx")
    parser.add_argument("--format", choices=tuple(FORMATS), default=None,
                        help="what to write: keras-bundle (a .zip) or onnx (default: from the --out file name's "
                             "ending, .zip or .onnx)")
    parser.add_argument("--model", choices=("best", "final"), default="best",
                        help="which of the run's models: best.keras or model.keras (default: best)")
    parser.set_defaults(handler=_export_command)


def export_format(out: str | Path, given: str | None) -> str:
    """The format to write: ``given``, else the one ``out``'s ending names; ConfigError if they disagree."""
    suffix = Path(out).suffix.lower()
    named = next((name for name, ending in FORMATS.items() if ending == suffix), None)
    endings = " or ".join(FORMATS.values())
    if given is None and named is None:
        raise ConfigError(f"{out}: expected a file name ending in {endings} (or --format)")
    if given is not None and named != given:
        raise ConfigError(f"{out}: expected a file name ending in {FORMATS[given]} for --format {given}")
    return given or named


def check_writable(out: str | Path) -> None:
    """Raise ConfigError unless a file can be written at ``out`` (tried with a temporary file beside it)."""
    target = Path(out)
    if target.is_dir():
        raise ConfigError(f"{target}: is a folder; expected a file name to write")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".celebalib-check-"):
            pass
    except OSError as error:
        raise ConfigError(f"{target}: cannot write there ({error.strerror or error})") from None


def _export_command(args: argparse.Namespace) -> int:
    """Check the arguments, then export."""
    from celebalib.bundles import sha256_file
    from celebalib.predict import thresholds_note
    from celebalib.runs import open_run

    kind = export_format(args.out, args.format)
    run = open_run(args.run)
    model_file = run.model_file(args.model)
    if not model_file.is_file():
        other = "final" if args.model == "best" else "best"
        raise RunError(f"{model_file}: not found; expected the run's {args.model} model (--model {other} "
                       "exports the other)")
    if kind == "onnx":
        _import_onnx()  # before TensorFlow loads, so a missing package is told at once
    check_writable(args.out)
    path = Path(args.out)
    if kind == "keras-bundle":
        manifest = write_bundle(run, path, which=args.model)
        digest = sha256_file(path)
        print(f"{model_file} -> {path} (run bundle: {len(manifest['members'])} files and the manifest, "
              f"{path.stat().st_size / 2**20:.1f} MiB; {thresholds_note(run)})\n"
              f"sha256 {digest}; online, --run takes https://.../{path.name}#sha256={digest}")
        return 0
    path = export_onnx(run, path, which=args.model)
    print(f"{model_file} -> {path} (ONNX, {path.stat().st_size / 2**20:.1f} MiB; input {INPUT_NAME!r}; "
          f"{thresholds_note(run)})")
    return 0
