#!/usr/bin/env python3
"""Do our exported SavedModels load and give the same answers under another TensorFlow release?

TF Serving N.M is built on TensorFlow N.M and loads a SavedModel the TF1 way (``LoadSavedModel``
with tag ``serve``, then ``Session::Run`` on a SignatureDef's tensor names). This script does the
same in two Python environments — ours (TensorFlow 2.12.1, which exported the models) and one
with the candidate release (``pip install tensorflow-cpu==X`` into a scratch venv) — on windows of
a real recording, and prints, per model and signature, the largest absolute difference of every
output. Used to decide the chart's default ``tensorflow/serving`` tag (deploy/README.md).

Usage: python scripts/check_savedmodel_compat.py --other-python /tmp/tf219/bin/python \
           [--model-dir models] [--audio ../shared/audio/Karissa_Hobbs_-_Lets_Go_Fishin.ogg]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODELS = {"musicnn-msd": 48000, "fcn-msd": 464000}  # serving_default input length at 16 kHz

CHILD = r"""
import json, sys
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
inputs = np.load(sys.argv[1])
out, report = {}, {"tf": tf.__version__, "models": {}}
for model in json.loads(sys.argv[3]):
    path = sys.argv[4] + "/" + model + "/1"
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        ops = sorted({n.op for n in meta.graph_def.node}
                     | {n.op for f in meta.graph_def.library.function for n in f.node_def})
        report["models"][model] = {"signatures": sorted(meta.signature_def), "ops": len(ops)}
        for name, sig in meta.signature_def.items():
            if name.startswith("__"):  # __saved_model_init_op: run by the loader itself
                continue
            if any(f"{model}/{name}/{key}" not in inputs for key in sig.inputs):
                continue
            feed = {}
            for key, info in sig.inputs.items():
                feed[graph.get_tensor_by_name(info.name)] = inputs[f"{model}/{name}/{key}"]
            keys = sorted(sig.outputs)
            values = sess.run([graph.get_tensor_by_name(sig.outputs[k].name) for k in keys], feed)
            for k, v in zip(keys, values):
                v = np.asarray(v)
                if v.dtype == object:  # tf.string: bytes -> str, so the archive needs no pickle
                    v = np.array([x.decode() for x in v.ravel()]).reshape(v.shape)
                out[f"{model}/{name}/{k}"] = v
np.savez(sys.argv[2], **out)
print(json.dumps(report))
"""


def make_inputs(audio: Path, model_dir: Path) -> dict[str, np.ndarray]:
    """Windows of a real song at 16 kHz for every signature that takes a waveform or spectrogram."""
    from audiolime.audio import decode
    from audiolime.method.waveform import resample, to_mono

    song = decode(audio)
    wave = resample(to_mono(song.waveform)[None], song.sample_rate, 16000)[0]
    inputs: dict[str, np.ndarray] = {}
    for model, n in MODELS.items():
        if not (model_dir / "serving" / model / "1" / "saved_model.pb").is_file():
            continue
        count = 4 if n < len(wave) // 4 else 1
        starts = np.linspace(0, len(wave) - n, count).astype(int)
        batch = np.stack([wave[s:s + n] for s in starts])
        inputs[f"{model}/serving_default/waveform"] = batch
        inputs[f"{model}/spectrogram/waveform"] = batch
    return inputs


def run(python: str, inputs_file: Path, out_file: Path, models: list[str], model_dir: Path) -> dict:
    proc = subprocess.run([python, "-c", CHILD, str(inputs_file), str(out_file), json.dumps(models),
                           str(model_dir / "serving")], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{python}: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other-python", required=True, help="python of a venv with the candidate TensorFlow")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--audio", type=Path, default=REPO.parent / "shared" / "audio" / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = make_inputs(args.audio, args.model_dir)
        models = sorted({k.split("/")[0] for k in inputs})
        # The spectrogram signature's output feeds from_spectrogram: run ours first to get it.
        np.savez(tmp / "in.npz", **inputs)
        ours = run(sys.executable, tmp / "in.npz", tmp / "ours.npz", models, args.model_dir)
        mine = dict(np.load(tmp / "ours.npz"))
        for model in models:
            inputs[f"{model}/from_spectrogram/spectrogram"] = mine[f"{model}/spectrogram/spectrogram"]
        np.savez(tmp / "in.npz", **inputs)
        ours = run(sys.executable, tmp / "in.npz", tmp / "ours.npz", models, args.model_dir)
        other = run(args.other_python, tmp / "in.npz", tmp / "other.npz", models, args.model_dir)
        a, b = dict(np.load(tmp / "ours.npz")), dict(np.load(tmp / "other.npz"))
    print(f"TensorFlow {ours['tf']} (export) vs {other['tf']}; input: {args.audio.name}")
    for model in models:
        print(f"  {model}: signatures {other['models'][model]['signatures']}, {other['models'][model]['ops']} op types")
    worst = 0.0
    for key in sorted(a):
        if a[key].dtype.kind in "fc":
            diff = float(np.max(np.abs(a[key] - b[key]))) if a[key].size else 0.0
            worst = max(worst, diff) if "probabilities" in key else worst
            print(f"  {key}: shape {list(a[key].shape)}, max |diff| {diff:.2e}")
        else:
            same = np.array_equal(a[key], b[key])
            print(f"  {key}: {'identical' if same else 'DIFFERENT'}")
    print(f"largest probability difference: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
