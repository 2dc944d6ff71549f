"""The chart comes up Ready: every pod of every tested value set (and of the kustomize output) is
run the way a kubelet would run it (tests/podsim.py): our containers as real local processes with
the rendered args, env, volumes and probes; the official TF Serving container checked against what
its release supports (deploy/tfserving-versions.json). Each distinct pod runs once per session.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
from pathlib import Path

import pytest

from audiolime import errors, modelcopy
from conftest import KARISSA, TAG, excerpt, s3_client, shared_dir
from podsim import Kubelet, check_ssl_config

pytestmark = pytest.mark.slow  # real servers, processes or the chart tools

RENDERS = [
    ("default-values",),
    ("cpu-values",),
    ("production-values",),
    ("filestore-values",),
    ("secure-values",),
    ("default-values", "tagger.server=audiolime"),
    ("default-values", "security.enabled=false"),
]


@pytest.fixture(scope="module")
def kubelet(tmp_path_factory, models: Path, moto_s3: str) -> Kubelet:
    """A kubelet stand-in whose models image holds what deploy/models/Dockerfile puts there (the
    `audiolime setup` layout, plus fcn-msd in the -fcn variant) and whose S3 is moto."""
    work = tmp_path_factory.mktemp("kubelet")
    images: dict[str, Path] = {}

    def image_content(name: str, tag: str, src: str) -> Path:
        assert (name, src) == ("models", "/image/models"), f"no content known for {name}:{src}"
        variant = "fcn" if tag.endswith("-fcn") else "plain"
        if variant not in images:
            root = work / f"models-image-{variant}"
            wanted = ["spleeter/2stems", "serving/musicnn-msd"] + (["serving/fcn-msd"] if variant == "fcn" else [])
            for rel in wanted:
                shutil.copytree(models / rel, root / rel, copy_function=_link_or_copy)
            modelcopy.write_manifest(root)
            images[variant] = root
        return images[variant]

    client = s3_client(moto_s3)
    made: set[str] = set()

    def make_bucket(bucket: str) -> None:
        if bucket not in made:
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
            made.add(bucket)

    return Kubelet(work, moto_s3, image_content, make_bucket)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.mark.parametrize("render", RENDERS, ids=[" ".join(r) for r in RENDERS])
def test_every_pod_of_the_chart_comes_up_ready(helm_template, kubelet, render):
    """Each value set's pods start from the rendered manifests (plus the Secrets its values say the
    operator made) with no network at pod start, pass their startup/readiness/liveness probes within
    the rendered budgets, are not ready before and after SIGTERM, and exit within their grace
    period; TF Serving's flags, probes and SSLConfig fit its release."""
    findings = kubelet.check(" ".join(render), (*helm_template(*render), *operator_secrets(kubelet.workdir)))
    assert findings == []


@pytest.mark.parametrize("path", ["base", "overlays/cpu"])
def test_every_pod_of_the_kustomize_output_comes_up_ready(kustomize, kubelet, path):
    """The kustomize base and CPU overlay (cert-manager Certificates, issued by podsim's stand-in;
    the token Secret the operator creates) pass the same checks as the chart's value sets."""
    assert kubelet.check(f"kustomize {path}", (*kustomize(path), *operator_secrets(kubelet.workdir))) == []


def test_each_distinct_pod_runs_once_and_all_of_ours_ran(kubelet, helm_template, kustomize):
    """Checking the renders again starts nothing (each distinct pod runs once: the suite stays
    lean), and the renders started our separator, tagger, explainer and models containers."""
    secrets = operator_secrets(kubelet.workdir)
    for render in RENDERS:
        kubelet.check(" ".join(render), (*helm_template(*render), *secrets))
    before = list(kubelet.started)
    for render in RENDERS:
        assert kubelet.check(" ".join(render), (*helm_template(*render), *secrets)) == []
    kubelet.check("kustomize base", (*kustomize("base"), *secrets))
    assert kubelet.started == before
    assert {s.split(":")[1] for s in before} >= {"separator", "tagger", "explainer", "models"}


def _tagger(docs) -> dict:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "audiolime-tagger")


def test_reports_a_grpc_probe_on_tf_serving_without_the_health_service(helm_template, kubelet):
    """A past defect reintroduced (a native gRPC probe on tensorflow/serving:2.12.1, which has
    no grpc.health.v1): whether the chart is tricked into it or the manifest is the old one, the
    smoke check says no tagger pod would become Ready."""
    # (security off: with TLS on, the chart refuses any gRPC probe on TF Serving's TLS port)
    tricked = helm_template("default-values", "tagger.tfserving.image.tag=2.12.1", "tagger.tfserving.version=2.15.1",
                            "tagger.tfserving.probe=grpc", "security.enabled=false")
    findings = kubelet.check("tricked", tricked)
    assert any("TF Serving 2.12.1 has no grpc.health.v1 service" in f for f in findings), findings
    assert any("TF Serving 2.12.1 has no flag --enable_grpc_healthcheck_service" in f for f in findings), findings
    for values, finding in ((("security.enabled=false",), "has no grpc.health.v1 service"),
                            ((), "gRPC probe on TF Serving's TLS port")):  # TLS on: no plaintext probe either
        old = [copy.deepcopy(d) for d in helm_template("default-values", *values)]
        c = _tagger(old)["spec"]["template"]["spec"]["containers"][0]
        c["image"] = "tensorflow/serving:2.12.1"
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            c[kind] = {"grpc": {"port": 8500}, "periodSeconds": 10, "failureThreshold": 3}
        findings = kubelet.check(f"old chart {values}", old)
        assert sum(finding in f for f in findings) == 3, findings
    newer = [copy.deepcopy(d) for d in helm_template("default-values", "tagger.tfserving.probe=grpc",
                                                     "security.enabled=false")]
    args = _tagger(newer)["spec"]["template"]["spec"]["containers"][0]["args"]
    args.remove("--enable_grpc_healthcheck_service=true")  # 2.20 has the service, but off by default
    assert any("the health service is off" in f for f in kubelet.check("flag dropped", newer))


def test_reports_models_downloaded_at_pod_start(helm_template, kubelet):
    """A past defect reintroduced (every pod start runs `audiolime setup`, which downloads
    wheels): with no network at pod start the init container fails and the check says so."""
    findings = kubelet.check("download", helm_template("default-values", "models.source=download"))
    failed = [f for f in findings if "init container model-setup failed without network at pod start" in f]
    assert failed and all("could not download" in f for f in failed), findings


def test_reports_a_readiness_probe_on_the_model_status_endpoint(helm_template, kubelet):
    """TF Serving's /v1/models/<name> answers 200 while the model is LOADING: as a readiness probe
    it would send traffic to a tagger that cannot answer, and the check rejects it."""
    docs = [copy.deepcopy(d) for d in helm_template("default-values")]
    c = _tagger(docs)["spec"]["template"]["spec"]["containers"][0]
    c["readinessProbe"]["httpGet"]["path"] = "/v1/models/musicnn-msd"
    findings = kubelet.check("status readiness", docs)
    assert any("answers 200 while the model is still LOADING" in f for f in findings), findings


def test_reports_a_model_the_volume_does_not_hold(helm_template, kubelet):
    """TF Serving waits for every configured model: listing fcn-msd while the models image lacks it
    (the plain variant) is reported as a tagger that never opens its ports."""
    docs = helm_template("default-values", "tagger.models={musicnn-msd,fcn-msd}")
    findings = kubelet.check("missing model", docs)
    assert any("model fcn-msd: no <version>/saved_model.pb" in f for f in findings), findings


def _operator_token_secret(name: str = "audiolime-auth-tokens") -> dict:
    """The token Secret an operator creates (deploy/README "Tokens"): kustomize base, value sets
    with security.auth.existingSecret."""
    import base64

    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {"tokens": base64.b64encode(b"team-a:operator-smoke-token-0123456789\n").decode()}}


@functools.cache
def _operator_tls_secrets(directory: str, *names: str) -> tuple[dict, ...]:
    """kubernetes.io/tls Secrets (tls.crt, tls.key, ca.crt) of the operator's own CA, as
    security.tls.existingSecrets names them (ci/secure-values.yaml)."""
    import base64

    from audiolime.certs import Authority

    ca = Authority(Path(directory), "operator CA")
    docs = []
    for name in names:
        pair = ca.issue(name)
        files = {"tls.crt": pair.cert.read_bytes(), "tls.key": pair.key.read_bytes(), "ca.crt": ca.cert.read_bytes()}
        docs.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": name},
                     "data": {k: base64.b64encode(v).decode() for k, v in files.items()}})
    return tuple(docs)


def operator_secrets(tmp: Path) -> tuple[dict, ...]:
    """Every Secret the CI value sets and the kustomize base expect the operator to have made."""
    tls = _operator_tls_secrets(str(tmp / "operator-ca"), *(f"audiolime-{c}-tls-ops"
                                                            for c in ("separator", "tagger", "explainer")))
    return (*tls, _operator_token_secret(), _operator_token_secret("audiolime-api-tokens"))


def test_the_default_chart_serves_explanations_over_tls_with_tokens(helm_template, kubelet, tmp_path):
    """The default values' pods, run together from the rendered manifests (certificates and token
    from the chart's generated Secrets, TF Serving's args incl. its --ssl_config_file), answer a
    client holding the token and the CA with a real explanation; without the token it is
    UNAUTHENTICATED, without TLS there is no connection, and the separator refuses a client with no
    certificate (mTLS) and one with another certificate of the chart's CA (PERMISSION_DENIED); the stack is only used once every rendered readiness probe has passed over
    the plaintext health port while the gRPC ports speak TLS."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from audiolime.client import ExplainerClient
    from audiolime.tls import channel_credentials
    from audiolime.v1 import common_pb2, explainer_pb2

    docs = helm_template("default-values")
    with kubelet.serve("default-values (together)", docs) as stack:
        explainer = stack.address("audiolime-explainer", 50052)
        ca = tmp_path / "ca.crt"
        ca.write_text(stack.secret("audiolime-explainer-tls")["ca.crt"])
        name, _, token = stack.secret("audiolime-explainer-auth-tokens")["tokens"].strip().partition(":")
        assert name == "default" and len(token) == 48
        audio = excerpt(shared_dir() / "audio" / KARISSA, 8.0, start_s=30.0)
        request = explainer_pb2.ExplainRequest(audio=common_pb2.AudioInput(content=audio, filename="k.flac"),
                                               model="musicnn-msd", tags=[TAG], num_samples=64, segments=2,
                                               seed=0, top_k=2)
        with ExplainerClient(explainer, timeout_s=600, token=token, ca=ca) as client:
            explanation = client.explain(request)
        assert [t.tag for t in explanation.targets] == [TAG]
        assert len(explanation.targets[0].components) == 4  # 2 stems x 2 segments
        with ExplainerClient(explainer, timeout_s=60, token="", ca=ca) as client:
            with pytest.raises(errors.Unauthenticated):
                client.get("0" * 32)
        with ExplainerClient(explainer, timeout_s=60, token="x" * 20, ca=ca) as client:
            with pytest.raises(errors.Unauthenticated):
                client.get("0" * 32)
        with ExplainerClient(explainer, timeout_s=10, token=token) as client:  # plaintext to a TLS port
            with pytest.raises(errors.AudiolimeError):
                client.get("0" * 32)
        separator = stack.address("audiolime-separator", 50051)
        with grpc.secure_channel(separator, channel_credentials(ca)) as channel:  # no client certificate
            with pytest.raises(grpc.RpcError) as refused:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # Another certificate of the chart's CA (the explainer's server certificate: Helm's
        # genSignedCert makes it valid for client auth too) is refused by name, before the request
        # is read; the explanation above went through with the explainer's client certificate.
        server_cert = tmp_path / "explainer-server"
        server_cert.mkdir()
        files = stack.secret("audiolime-explainer-tls")
        (server_cert / "tls.crt").write_text(files["tls.crt"])
        (server_cert / "tls.key").write_text(files["tls.key"])
        other = channel_credentials(ca, server_cert / "tls.crt", server_cert / "tls.key")
        with grpc.secure_channel(separator, other) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary("/audiolime.v1.Separator/Separate")(b"", timeout=30)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value.details()
        for name, proc in stack.processes.items():
            assert proc.poll() is None, f"{name} died"


def test_reports_a_broken_tf_serving_ssl_config(helm_template, kubelet, tmp_path):
    """TF Serving's SSLConfig is checked the way it parses it: a key of another certificate, a CA
    that did not sign the certificate, an unparsable file and client_verify off are each reported."""
    good = tmp_path / "good.config"
    docs = helm_template("default-values")
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    import base64

    tagger = {k: base64.b64decode(v).decode() for k, v in secrets["audiolime-tagger-tls"]["data"].items()}
    other = {k: base64.b64decode(v).decode() for k, v in secrets["audiolime-separator-tls"]["data"].items()}

    def write(path, key, cert, verify="true"):
        q = lambda pem: " ".join('"%s\\n"' % line for line in pem.splitlines())  # noqa: E731
        path.write_text(f"server_key: {q(key)}\nserver_cert: {q(cert)}\ncustom_ca: {q(tagger['ca.crt'])}\n"
                        f"client_verify: {verify}\n")
        return path

    assert check_ssl_config(write(good, tagger["tls.key"], tagger["tls.crt"]), "x") == []
    mismatch = check_ssl_config(write(tmp_path / "m", other["tls.key"], tagger["tls.crt"]), "x")
    assert any("does not match the private key" in f for f in mismatch), mismatch
    (tmp_path / "junk").write_text("server_key: unquoted\n")
    assert any("not a TF Serving SSLConfig" in f for f in check_ssl_config(tmp_path / "junk", "x"))
    foreign = helm_template("default-values", "fullnameOverride=other")  # another render: another CA
    foreign_ca = base64.b64decode(next(d for d in foreign if d["kind"] == "Secret"
                                       and d["metadata"]["name"] == "other-ca")["data"]["tls.crt"]).decode()
    wrong_ca = write(tmp_path / "w", tagger["tls.key"], tagger["tls.crt"]).read_text().replace(
        " ".join('"%s\\n"' % line for line in tagger["ca.crt"].splitlines()),
        " ".join('"%s\\n"' % line for line in foreign_ca.splitlines()))
    (tmp_path / "w").write_text(wrong_ca)
    (finding,) = check_ssl_config(tmp_path / "w", "x")
    assert finding.startswith("--ssl_config_file=x: server_cert is not signed by custom_ca"), finding
    off = check_ssl_config(write(tmp_path / "off", tagger["tls.key"], tagger["tls.crt"], "false"), "x")
    assert off == ["--ssl_config_file=x: client_verify is off (no mTLS)"]
