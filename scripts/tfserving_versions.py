#!/usr/bin/env python3
"""Build deploy/tfserving-versions.json: what each TensorFlow Serving release supports, read from
its own source at the release tag (a git checkout of tensorflow/serving with its tags).

The official ``tensorflow/serving`` binary cannot run here, so the chart smoke test
(tests/test_chart_smoke.py) checks the rendered TF Serving container against this table instead:
every flag must be one the release's ``main.cc`` defines, a gRPC probe needs the health service
(``--enable_grpc_healthcheck_service``, ``server.cc``) with one of the service names it registers,
and an HTTP readiness probe must use an endpoint that fails until a version is AVAILABLE.

Usage: python scripts/tfserving_versions.py --repo PATH/TO/serving.git [--out deploy/tfserving-versions.json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "deploy" / "tfserving-versions.json"
# Final releases from the one our SavedModels were exported with (TF 2.12) to the newest tag.
RELEASES = ["2.12.1", "2.13.0", "2.13.1", "2.14.0", "2.14.1", "2.15.1", "2.16.1", "2.17.0", "2.17.1",
            "2.18.0", "2.18.1", "2.19.0", "2.19.1", "2.20.0"]
MAIN = "tensorflow_serving/model_servers/main.cc"
SERVER = "tensorflow_serving/model_servers/server.cc"
CORE = "tensorflow_serving/model_servers/server_core.cc"
REST_UTIL = "tensorflow_serving/model_servers/http_rest_api_util.cc"
REST_HANDLER = "tensorflow_serving/model_servers/http_rest_api_handler.cc"
STATUS = "tensorflow_serving/model_servers/get_model_status_impl.cc"
METADATA = "tensorflow_serving/servables/tensorflow/get_model_metadata_impl.cc"
DOCKERFILE = "tensorflow_serving/tools/docker/Dockerfile"


def show(repo: Path, tag: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), "show", f"{tag}:{path}"], capture_output=True,
                          text=True, check=True).stdout


def describe(repo: Path, tag: str) -> dict:
    """One release's facts, each read from the file named beside it."""
    commit = subprocess.run(["git", "--git-dir", str(repo), "rev-list", "-n1", tag], capture_output=True,
                            text=True, check=True).stdout.strip()
    main, server, core = show(repo, tag, MAIN), show(repo, tag, SERVER), show(repo, tag, CORE)
    flags = sorted(set(re.findall(r'tensorflow::Flag\(\s*"([A-Za-z0-9_]+)"', main)))
    health = "EnableDefaultHealthCheckService" in server
    services = sorted(set(re.findall(r'SetServingStatus\(\s*"([^"]*)"', server)))
    handler, util = show(repo, tag, REST_HANDLER), show(repo, tag, REST_UTIL)
    metadata_impl, status_impl = show(repo, tag, METADATA), show(repo, tag, STATUS)
    dockerfile = show(repo, tag, DOCKERFILE)
    runtime = dockerfile.split("FROM ", 2)[-1]
    base = runtime.split()[0]
    packages = re.findall(r"apt-get install[^\n]*\n((?:\s+[\w.+-]+\s*\\?\n)+)", runtime)
    installed = sorted({p for block in packages for p in re.findall(r"[\w.+-]+", block)})
    # Models from --model_config_file are loaded inside ServerCore::Create (AddModelsViaModelConfigList ->
    # ConnectAdaptersToManagerAndAwaitModelLoads), which BuildAndStart calls before it opens any port.
    waits = ("ConnectAdaptersToManagerAndAwaitModelLoads" in core
             and server.index("ServerCore::Create(") < server.index("builder.BuildAndStart()"))
    return {
        "commit": commit,
        "flags": flags,
        "grpc_health": {
            "supported": health,
            "flag": "enable_grpc_healthcheck_service" if "enable_grpc_healthcheck_service" in flags else None,
            # grpc::DefaultHealthCheckService answers "" as SERVING once enabled; these are set too.
            "services": ([""] + services) if health else [],
        },
        "rest": {
            "status_path": "/v1/models/<name>" if "kModelStatusApiRegex" in util else None,
            # GetModelStatus lists every version the monitor knows, LOADING and END included, with
            # HTTP 200: it cannot tell "not loaded yet" from "AVAILABLE".
            "status_ok_while_loading": "ModelVersionStatus_State_LOADING" in status_impl,
            "metadata_path": "/v1/models/<name>/metadata" if '"metadata"' in handler else None,
            # GetModelMetadata needs a servable handle: NOT_FOUND (HTTP 404) until a version is AVAILABLE.
            "metadata_needs_available_version": "GetServableHandle" in metadata_impl,
        },
        "ports_open_after_initial_models_load": waits,
        "image": {"base": base, "apt_packages": installed,
                  "binary": re.search(r"COPY --from=\S+ \S+ (\S*tensorflow_model_server)\n", runtime).group(1),
                  "exec_probe_tools": [t for t in ("curl", "wget") if t in installed]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of tensorflow/serving (with tags)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    table = {
        "source": "github.com/tensorflow/serving at each release tag; files: "
                  + ", ".join([MAIN, SERVER, CORE, REST_UTIL, REST_HANDLER, STATUS, METADATA, DOCKERFILE]),
        "generated_by": "scripts/tfserving_versions.py",
        "releases": {tag: describe(args.repo, tag) for tag in RELEASES},
    }
    args.out.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
