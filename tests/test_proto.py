"""Generated stubs match proto/, and our TF Serving subset is wire-compatible with the official API."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audiolime import protogen


def test_generated_stubs_match_proto_sources(tmp_path: Path):
    """Regenerating from proto/ reproduces the committed stubs byte for byte (run `make proto`)."""
    fresh = protogen.generate(out_root=tmp_path)
    assert fresh, "protoc generated nothing"
    for path in fresh:
        rel = path.relative_to(tmp_path)
        committed = protogen.OUT_ROOT / rel
        assert committed.is_file(), f"{rel} is generated but not committed: run `make proto`"
        assert committed.read_bytes() == path.read_bytes(), f"{rel} drifted from proto/: run `make proto`"
    committed = {p.relative_to(protogen.OUT_ROOT) for p in (protogen.OUT_ROOT / "audiolime").glob("*/*_pb2*.py*")}
    assert committed == {p.relative_to(tmp_path) for p in fresh}, "stale generated files: run `make proto`"


def _pairs():
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2

    from audiolime.tfs import tfs_pb2 as ours

    return [
        (ours.TensorProto, tensor_pb2.TensorProto), (ours.TensorShapeProto, tensor_shape_pb2.TensorShapeProto),
        (ours.TensorShapeProto.Dim, tensor_shape_pb2.TensorShapeProto.Dim), (ours.ModelSpec, model_pb2.ModelSpec),
        (ours.PredictRequest, predict_pb2.PredictRequest), (ours.PredictResponse, predict_pb2.PredictResponse),
        (ours.GetModelMetadataRequest, get_model_metadata_pb2.GetModelMetadataRequest),
        (ours.GetModelMetadataResponse, get_model_metadata_pb2.GetModelMetadataResponse),
        (ours.SignatureDefMap, get_model_metadata_pb2.SignatureDefMap),
        (ours.SignatureDef, meta_graph_pb2.SignatureDef), (ours.TensorInfo, meta_graph_pb2.TensorInfo),
        (ours.GetModelStatusRequest, get_model_status_pb2.GetModelStatusRequest),
        (ours.GetModelStatusResponse, get_model_status_pb2.GetModelStatusResponse),
        (ours.ModelVersionStatus, get_model_status_pb2.ModelVersionStatus),
    ]


def test_tfs_subset_fields_match_official_descriptors():
    """Every field of our subset has the official field's number, type and cardinality."""
    for ours, official in _pairs():
        theirs = {f.name: f for f in official.DESCRIPTOR.fields}
        for f in ours.DESCRIPTOR.fields:
            t = theirs.get(f.name)
            assert t is not None, f"{ours.DESCRIPTOR.name}.{f.name} is not in {official.DESCRIPTOR.full_name}"
            assert (f.number, f.type, f.label) == (t.number, t.type, t.label), f"{ours.DESCRIPTOR.name}.{f.name}"
    for ours_enum, official_enum in [(_pairs()[0][0].DESCRIPTOR.fields_by_name["dtype"].enum_type,
                                      _pairs()[0][1].DESCRIPTOR.fields_by_name["dtype"].enum_type)]:
        for v in ours_enum.values:
            assert official_enum.values_by_name[v.name].number == v.number


def test_predict_request_roundtrips_through_official_messages():
    """A request built without TensorFlow parses as the official PredictRequest, and back."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from audiolime.tfs import tfs_pb2
    from audiolime.tfs.tensors import make_tensor_proto, to_ndarray

    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    req = tfs_pb2.PredictRequest()
    req.model_spec.name = "musicnn-msd"
    req.model_spec.version.value = 2
    req.inputs["waveform"].CopyFrom(make_tensor_proto(x))
    official = predict_pb2.PredictRequest.FromString(req.SerializeToString())
    assert official.model_spec.name == "musicnn-msd" and official.model_spec.version.value == 2
    np.testing.assert_array_equal(tf.make_ndarray(official.inputs["waveform"]), x)
    back = tfs_pb2.PredictResponse.FromString(
        predict_pb2.PredictResponse(outputs={"p": tf.make_tensor_proto(x[:, :2])}).SerializeToString())
    np.testing.assert_array_equal(to_ndarray(back.outputs["p"]), x[:, :2])
    labels = tfs_pb2.TensorProto.FromString(tf.make_tensor_proto(np.array([b"rock", b"pop"])).SerializeToString())
    assert list(to_ndarray(labels)) == ["rock", "pop"]


# -- buf: the API's lint and its compatibility with the previous commit ---------------------------------


def _buf(buf: str, *args: str, cwd: Path = protogen.REPO):
    import subprocess

    return subprocess.run([buf, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_buf_lint_is_clean(buf):
    """`buf lint` (STANDARD, with the exceptions buf.yaml gives reasons for) reports nothing, and every
    file of ours names its Go and Java packages."""
    proc = _buf(buf, "lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in protogen.proto_files():
        text = path.read_text()
        assert 'option go_package = "github.com/audiolime/audiolime/gen/go/' in text, path
        assert "option java_package = " in text and "option java_multiple_files = true;" in text, path


def test_buf_breaking_against_the_previous_commit(buf):
    """proto/ now is wire- and JSON-compatible with the previous commit's (`buf breaking`, WIRE_JSON),
    or with HEAD where there is no previous commit (a shallow clone)."""
    import subprocess

    ref = "HEAD~1" if subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD~1"], cwd=protogen.REPO,
                                     capture_output=True).returncode == 0 else "HEAD"
    proc = _buf(buf, "breaking", "--against", f".git#ref={ref},subdir=proto")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_buf_breaking_catches_a_break(buf, tmp_path):
    """The check bites: a renumbered field and a removed RPC in a copy of proto/ are reported."""
    import shutil

    before, after = tmp_path / "before", tmp_path / "after"
    shutil.copytree(protogen.PROTO_ROOT, before)
    shutil.copytree(protogen.PROTO_ROOT, after)
    shutil.copy(protogen.REPO / "buf.yaml", tmp_path / "buf.yaml")
    explainer = after / "audiolime" / "v1" / "explainer.proto"
    text = explainer.read_text()
    text = text.replace("AudioInput audio = 1;", "AudioInput audio = 99;", 1)
    text = "\n".join(line for line in text.splitlines() if "rpc CancelExplanation(" not in line)
    explainer.write_text(text)
    proc = _buf(buf, "breaking", str(after), "--against", str(before))
    assert proc.returncode != 0
    assert "CancelExplanation" in proc.stdout and 'field "1" with name "audio"' in proc.stdout, proc.stdout
