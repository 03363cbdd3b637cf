"""The command line as a user meets it, each case in a fresh interpreter: --help, usage
mistakes (one line, exit 2), user errors (one line, exit 1), and no TensorFlow before it is needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from celebalib import cli

PROJECT = Path(__file__).resolve().parents[1]
# Runs the command line, then reports on stdout's last line whether TensorFlow was imported.
WRAPPER = (
    "import sys\n"
    "from celebalib.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "finally:\n"
    "    print('TENSORFLOW_LOADED=' + str('tensorflow' in sys.modules or 'keras' in sys.modules))\n"
    "sys.exit(code)\n"
)
LAZY = list(cli.COMMANDS)


def run_cli(*argv: str, cwd: Path | None = None) -> tuple[int, str, str, bool]:
    """Run the command line in a fresh interpreter: (exit status, stdout, stderr, TensorFlow loaded)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)
    lines = done.stdout.rstrip("\n").splitlines()
    assert lines and lines[-1].startswith("TENSORFLOW_LOADED="), done.stdout + done.stderr
    return done.returncode, "\n".join(lines[:-1]), done.stderr, lines[-1].endswith("True")


@pytest.mark.parametrize("command", LAZY)
def test_help_shows_defaults_and_an_example_without_tensorflow(command: str) -> None:
    code, out, err, tensorflow = run_cli(command, "--help")
    assert code == 0, err
    assert f"usage: celebalib {command}" in out
    assert "(default: " in out, "no default shown"
    assert f"example:\n  python -m celebalib {command} " in out
    assert not tensorflow


def test_top_level_help_lists_every_command_and_the_exit_codes() -> None:
    code, out, _, tensorflow = run_cli("--help")
    assert code == 0
    for name in cli.COMMANDS:
        assert f"\n    {name} " in out
    assert "0 done, 1 user error, 2 usage mistake, 130 interrupted" in out
    assert not tensorflow


@pytest.mark.parametrize("argv, option", [
    (["evaluate", "--run", "runs/x", "--objective", "precision"], "--objective"),
    (["evaluate", "--run", "runs/x", "--test-time-flip", "maybe"], "--test-time-flip"),
    (["query", "--run", "runs/x", "--like", "1.jpg", "--metric", "manhattan"], "--metric"),
    (["index", "--run", "runs/x", "--split", "dev"], "--split"),
    (["synth", "--out", "x", "--images", "many"], "--images"),
    (["app", "--port", "http"], "--port"),
    (["export", "--run", "runs/x", "--out", "x.tflite", "--format", "tflite"], "--format"),
    (["evaluate", "--run", "runs/x", "--no-such-option"], "--no-such-option"),
    (["no-such-command"], "COMMAND"),
])
def test_a_usage_mistake_is_one_line_and_exit_2_before_tensorflow(argv: list[str], option: str) -> None:
    code, out, err, tensorflow = run_cli(*argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("celebalib") and ": error: " in err and option in err
    assert not tensorflow


@pytest.mark.parametrize("argv, expected", [
    (["synth", "--out", "x", "--images", "0"], "--images 0"),
    (["check", "no-such-root"], "no-such-root"),
    (["app", "--run", "no-such-run"], "run folder not found"),
    (["export", "--run", "no-such-run", "--out", "x.onnx"], "run folder not found"),
    (["export", "--run", "no-such-run", "--out", "x.bin"], "x.bin: expected a file name ending in .zip or .onnx"),
])
def test_a_user_error_is_one_line_and_exit_1(argv: list[str], expected: str, tmp_path: Path) -> None:
    code, _, err, _ = run_cli(*argv, cwd=tmp_path)
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"celebalib {argv[0]}: error: ") and expected in err


def test_old_flag_names_still_parse_as_hidden_aliases() -> None:
    evaluate = cli.build_parser("evaluate")
    old = evaluate.parse_args(["evaluate", "--run", "r", "--flip", "off", "--shift", "2", "--no-progress"])
    new = evaluate.parse_args(["evaluate", "--run", "r", "--test-time-flip", "off", "--test-time-shift", "2",
                               "--quiet"])
    assert vars(old) == vars(new)
    assert "--flip" not in evaluate.format_help() and "--no-progress" not in evaluate.format_help()
    synth = cli.build_parser("synth")
    assert synth.parse_args(["synth", "--out", "x", "--n", "30"]).images == 30


def test_main_returns_the_status_instead_of_exiting(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["synth", "--out", "x", "--images", "lots"]) == 2
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("celebalib ")


def test_quiet_tensorflow_keeps_a_level_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    cli.quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    cli.quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


def _import_with_quiet_startup(tmp_path: Path, package_body: str) -> subprocess.CompletedProcess:
    """Import a stand-in ``tensorflow`` package (from tmp_path) after quiet_tensorflow()."""
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(package_body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(PROJECT)])}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    code = ("from celebalib.cli import quiet_tensorflow\nquiet_tensorflow()\nimport tensorflow\n"
            "import os; os.write(2, b'after the import\\n')\nprint(tensorflow.READY)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_what_tensorflow_writes_while_it_loads_is_dropped(tmp_path: Path) -> None:
    done = _import_with_quiet_startup(tmp_path, "import os\nos.write(2, b'I0000 cpu_feature_guard.cc] AVX2\\n')\n"
                                                "READY = 'loaded'\n")
    assert done.returncode == 0 and done.stdout == "loaded\n"
    assert done.stderr == "after the import\n"


def test_a_failing_tensorflow_import_shows_what_it_wrote(tmp_path: Path) -> None:
    done = _import_with_quiet_startup(tmp_path, "import os\nos.write(2, b'libcudart.so: cannot open\\n')\n"
                                                "raise ImportError('broken install')\n")
    assert done.returncode == 1
    assert "libcudart.so: cannot open" in done.stderr and "ImportError: broken install" in done.stderr


@pytest.mark.slow
def test_the_real_tensorflow_starts_without_its_cpp_lines() -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    code = "from celebalib.cli import quiet_tensorflow\nquiet_tensorflow()\nimport tensorflow as tf\nprint(int(tf.constant(1) + 1))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout == "2\n"
    assert done.stderr == "", done.stderr


def test_a_library_warning_is_one_note_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from celebalib import data

    def handler(args) -> int:
        warnings.warn("3 of 10 images listed are missing; they are left out.", data.MissingImagesWarning)
        return 0

    monkeypatch.setattr(data, "_check_command", handler)
    before = warnings.showwarning
    assert cli.main(["check", "somewhere"]) == 0
    assert capsys.readouterr().err == "celebalib check: note: 3 of 10 images listed are missing; they are left out.\n"
    assert warnings.showwarning is before
