"""Multi-worker training: two worker processes on this machine's loopback, as on two machines.

Each worker logs which images its training steps saw (by their pixel sums: the images are kept
in memory as whole numbers, so the sums are exact and tell the 32 images apart), so the test can show that the workers read different shards, and that what they learnt
together is not what one worker learns alone from its shard.
"""

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

# Each worker runs what a user runs on each machine, plus a callback that keeps its final weights
# and a training step that first writes the pixel sum of each image it gets (``pixel_sums``).
WORKER = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    import tensorflow as tf
    from celebalib import train

    class KeepWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            np.savez(sys.argv[3], *self.model.get_weights())

    step = keras.Model.train_step

    def logged_step(self, data):
        sums = tf.cast(tf.reduce_sum(data[0], axis=[1, 2, 3]), tf.int64)
        tf.print(sums, summarize=-1, output_stream="file://" + sys.argv[4])
        return step(self, data)

    keras.Model.train_step = logged_step

    run = train.fit(sys.argv[2], data_root=sys.argv[1], epochs=1, image_size=32, batch_size=16, limit=32,
                    alpha=0.35, optimizer="adam", strategy="multi-worker", cache="on", progress=False,
                    callbacks=[KeepWeights()])
    print("RUN", None if run is None else run.path)
""")


def pixel_sums(rows) -> dict[int, str]:
    """Each row's image, as training keeps it in memory (32 px, rounded to whole numbers), summed, to its id."""
    from celebalib.data import load_image

    return {int(np.round(load_image(path, image_size=32)).sum()): image_id
            for path, image_id in zip(rows["path"], rows["image_id"])}


def logged_sums(path: Path) -> list[int]:
    """The pixel sums a worker's training steps wrote, one line (``[s1 s2 ...]``) per step."""
    return [int(code) for line in path.read_text().split() for code in [line.strip("[]")] if code]


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
def test_two_workers_read_different_shards_and_learn_together(synthetic_root: Path, tmp_path: Path) -> None:
    from celebalib import train
    from celebalib.data import load_celeba, split_rows

    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    out = tmp_path / "runs" / "multi"
    processes = []
    for index in range(2):
        temp = tmp_path / f"tmp{index}"
        temp.mkdir()
        env = {**os.environ, "TMPDIR": str(temp), "CUDA_VISIBLE_DEVICES": "-1",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(synthetic_root), str(out), str(tmp_path / f"weights{index}.npz"),
             str(tmp_path / f"seen{index}.txt")],
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
    # Each worker read its own half of the 32 train images: the two halves are disjoint and make the whole.
    table = load_celeba(synthetic_root)
    codes = pixel_sums(split_rows(table, "train", 32))
    assert len(codes) == 32  # the sums tell these images apart
    seen = [logged_sums(tmp_path / f"seen{index}.txt") for index in range(2)]
    assert [len(s) for s in seen] == [16, 16] and not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(codes)
    # Worker 0 alone on its shard, in its local batches of 8, learns something else than the pair did
    # together: equal weights above come from the gradients they exchanged, not from equal data.
    shard = table[(table["split"] != "train") | table["image_id"].isin([codes[c] for c in seen[0]])]
    alone = train.fit(tmp_path / "alone", table=shard, epochs=1, image_size=32, batch_size=8, limit=32, alpha=0.35,
                      optimizer="adam", cache="on", progress=False)
    differences = [np.abs(mine - first[name]).max() for mine, name in zip(alone.model("final").get_weights(),
                                                                           first.files)]
    assert max(differences) > 1e-3


def test_multi_worker_without_tf_config_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from celebalib import train
    from celebalib.errors import ConfigError

    monkeypatch.setenv("TF_CONFIG", '{"task": {"type": "worker"}}')
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        train.get_strategy("multi-worker")
