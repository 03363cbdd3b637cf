"""Multi-worker training: two worker processes on this machine's loopback, as on two machines."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

# Each worker runs what a user runs on each machine, plus a callback that keeps its final weights.
WORKER = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    from celebalib import train

    class KeepWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            np.savez(sys.argv[3], *self.model.get_weights())

    run = train.fit(sys.argv[2], data_root=sys.argv[1], epochs=1, image_size=32, batch_size=16, limit=32,
                    alpha=0.35, optimizer="adam", strategy="multi-worker", progress=False,
                    callbacks=[KeepWeights()])
    print("RUN", None if run is None else run.path)
""")


def free_ports(count: int) -> list[int]:
    """Ports that are free on 127.0.0.1 now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_two_workers_end_with_the_same_weights_and_one_run_folder(synthetic_root: Path, tmp_path: Path) -> None:
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    out = tmp_path / "runs" / "multi"
    processes = []
    for index in range(2):
        temp = tmp_path / f"tmp{index}"
        temp.mkdir()
        env = {**os.environ, "TMPDIR": str(temp), "CUDA_VISIBLE_DEVICES": "-1",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(synthetic_root), str(out), str(tmp_path / f"weights{index}.npz")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [process.communicate(timeout=600)[0] for process in processes]
    finally:  # a worker left waiting for its peer would never end
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    assert f"RUN {out}" in outputs[0] and "RUN None" in outputs[1]
    first, second = (np.load(tmp_path / f"weights{index}.npz") for index in range(2))
    assert len(first.files) == len(second.files) > 100  # moving statistics included
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])
    # The chief wrote the one run folder; the other worker's temporary copy is gone.
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["multi"]
    assert (out / "model.keras").is_file() and json.loads((out / "config.json").read_text())["settings"]["strategy"] == "multi-worker"
    assert list((tmp_path / "tmp1").iterdir()) == []


def test_multi_worker_without_tf_config_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from celebalib import train
    from celebalib.errors import ConfigError

    monkeypatch.setenv("TF_CONFIG", '{"task": {"type": "worker"}}')
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        train.get_strategy("multi-worker")
