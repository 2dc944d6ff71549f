"""The command line's conventions: --version, help on every command and flag (with defaults and,
for the services, environment variables), no prefix matching, arguments checked before any work
(one line, exit 2), the default port of --server, `up`'s port check and taggers, file modes that
follow the umask, piped output with whole names, the downmix warning and --top-n."""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiolime import __version__, settings
from audiolime.channels import with_default_port
from audiolime.cli import build_parser
from conftest import ENV, cli_error

pytestmark = pytest.mark.slow  # the console script as real processes, the models

EXE = Path(sys.executable).with_name("audiolime")


def run(*argv: str, **kw) -> subprocess.CompletedProcess:
    """The installed console script as a separate process (stdout and stderr are pipes, not a TTY)."""
    return subprocess.run([str(EXE), *argv], capture_output=True, text=True, timeout=kw.pop("timeout", 120),
                          env={**ENV, **kw.pop("env", {})}, **kw)


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser of the CLI, sub-commands included, and the three services'."""
    from audiolime.explainer.server import build_parser as explainer
    from audiolime.separator.server import build_parser as separator
    from audiolime.tagger.server import build_parser as tagger

    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser) -> None:
        found[parser.prog] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    for build in (explainer, separator, tagger):
        walk(build())
    return found


def test_version_and_help_exit_zero():
    """`--version` names the version; `serve --help` and every service's --help exit 0."""
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"audiolime {__version__}", proc
    proc = run("serve", "--help")
    assert proc.returncode == 0 and "explainer" in proc.stdout and not proc.stderr, proc
    for component in ("explainer", "separator", "tagger"):
        proc = run("serve", component, "--help")
        assert proc.returncode == 0 and f"audiolime serve {component}" in proc.stdout, proc.stderr
    text = " ".join(run("serve", "explainer", "--help").stdout.split())
    assert "windows per Predict (default: 64; $AUDIOLIME_BATCH_SIZE)" in text
    assert "concurrent Predicts per explanation (default: 4; $AUDIOLIME_MAX_IN_FLIGHT)" in text


def test_every_command_and_flag_has_help_with_its_default():
    """Every flag of every parser has help; a service flag's help names its default and variable
    (from the settings tables); a CLI flag with a default names it."""
    parsers = _parsers()
    assert {"audiolime", "audiolime explain", "audiolime audit", "audiolime up", "audiolime serve",
            "audiolime serve explainer", "audiolime serve tagger", "audiolime serve separator"} <= set(parsers)
    for prog, parser in parsers.items():
        assert not parser.allow_abbrev, prog
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), f"{prog} {action.option_strings or action.dest}: no help"
    tables = {"audiolime serve explainer": settings.EXPLAINER, "audiolime serve separator": settings.SEPARATOR,
              "audiolime serve tagger": settings.TAGGER}
    for prog, table in tables.items():
        text = "".join(parsers[prog].format_help().split())  # argparse wraps lines inside words ("--tls-\nkey")
        for s in table:
            if not s.hidden:
                assert "".join(settings.help_text(s).replace("%%", "%").split()) in text, (prog, s.flag)
                assert s.env is None or f"${s.env}" in settings.help_text(s)
    explain = " ".join(parsers["audiolime explain"].format_help().split())
    for phrase in ("--seed SEED random seed", "--top-n TOP_N", "--batch-size BATCH_SIZE windows per tagger call "
                   "(default 64)", "--server SERVER use the explainer service at HOST[:PORT] (port default 50052)"):
        assert phrase in explain, phrase


def test_no_prefix_matching(capsys, tmp_path):
    """`--tagg rock` is an unknown flag, not `--tagger rock`; likewise in the services."""
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((100, 1), np.float32), 8000)
    line = cli_error(capsys, ["explain", str(song), "--tagg", "rock"])
    assert "unrecognized arguments: --tagg rock" in line
    from audiolime.explainer.server import build_parser as explainer

    with pytest.raises(SystemExit) as info:
        explainer().parse_args(["--tagg", "localhost:1"])
    assert info.value.code == 2


def test_paths_are_checked_before_any_work(tmp_path):
    """An --out that is a file, a directory given as the song, a missing song: one line, exit 2,
    before any model loads (the models directory does not even exist) or any server is dialled."""
    song = tmp_path / "song.wav"
    sf.write(song, (0.1 * np.random.default_rng(0).standard_normal((8000, 1))).astype(np.float32), 8000)
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me\n")
    nowhere = tmp_path / "no-models"
    cases = [
        ([str(song), "--out", str(taken)], f"--out {taken}: exists and is not a directory"),
        ([str(song), "--out", str(taken / "sub")], "is not a writable directory"),
        ([str(tmp_path), "--out", str(tmp_path / "out")], f"{tmp_path}: is a directory, not an audio file"),
        ([str(tmp_path / "missing.wav")], "missing.wav: no such file"),
        ([str(song), "--out", str(taken), "--server", "127.0.0.1:9"], "exists and is not a directory"),
        ([str(song), "--top-n", "0"], "top_n"),
    ]
    for argv, message in cases:
        proc = run("explain", *argv, "--model-dir", str(nowhere), timeout=60)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (argv, proc.stderr)
    assert taken.read_text() == "keep me\n" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("target, expected", [
    ("localhost", "localhost:50052"), ("localhost:7000", "localhost:7000"), ("10.1.2.3", "10.1.2.3:50052"),
    ("[::1]", "[::1]:50052"), ("[::1]:7000", "[::1]:7000"), ("::1", "[::1]:50052"),
    ("dns:///explainer.ns.svc", "dns:///explainer.ns.svc"), ("unix:/tmp/s.sock", "unix:/tmp/s.sock"),
])
def test_server_without_a_port_gets_ours(target, expected):
    """`--server HOST` dials the explainer's default port, not gRPC's 443."""
    assert with_default_port(target, settings.PORTS["explainer"]) == expected


def test_up_names_a_busy_port_in_one_line(models):
    """A port `up` needs is taken: one line naming it, exit 2, before any service starts."""
    from audiolime.processes import free_port

    base = free_port()
    with socket.socket() as holder:
        for _ in range(20):  # a base whose whole range is free except the one we take
            try:
                holder.bind(("127.0.0.1", base + 12))
                break
            except OSError:
                base = free_port()
        holder.listen()
        proc = run("up", "--base-port", str(base), "--model-dir", str(models), timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"port {base + 12} on 127.0.0.1 is in use" in lines[0] and "--base-port" in lines[0]
    assert "Traceback" not in proc.stderr


def test_up_serves_every_installed_tagger(models, tmp_path):
    """`up` configures its tagger with every model under <model-dir>/serving that has a version."""
    from audiolime.commands.up import installed_taggers, model_config

    names = installed_taggers(models)
    assert {"musicnn-msd", "fcn-msd"} <= set(names)
    fake = tmp_path / "models"
    (fake / "serving" / "a" / "1").mkdir(parents=True)
    (fake / "serving" / "no-version" / "notes").mkdir(parents=True)
    assert installed_taggers(fake) == ["a"]
    config = model_config(fake, ["a"])
    assert f'name: "a" base_path: "{fake / "serving" / "a"}"' in config


def test_piped_explanation_of_a_six_channel_song(models, tmp_path):
    """One real explanation through the console script with stdout a pipe and umask 022: whole
    file names in the table, files 0644, --top-n 2 explains two tags, and the 6-channel input is
    recorded as such with a downmix warning."""
    rng = np.random.default_rng(7)
    t = np.arange(6 * 22050) / 22050
    tones = [np.sin(2 * np.pi * f * t) for f in (220, 330, 440, 55, 550, 660)]
    song = tmp_path / "surround.wav"
    sf.write(song, (0.2 * np.stack(tones, 1) + 0.01 * rng.standard_normal((len(t), 6))).astype(np.float32), 22050)
    out = tmp_path / "out"
    proc = subprocess.run(
        ["sh", "-c", 'umask 022 && exec "$0" "$@"', str(EXE), "explain", str(song), "--top-n", "2",
         "--num-samples", "32", "--segments", "2", "--start", "1", "--out", str(out), "--model-dir", str(models)],
        capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / "explanation.json").read_text())
    assert doc["audio"]["channels"] == 6
    assert any("6 channels mixed down to 2" in w for w in doc["warnings"]), doc["warnings"]
    assert len(doc["targets"]) == 2
    files = [c["file"] for target in doc["targets"] for c in target["components"] if c["file"]]
    assert files and all(f in proc.stdout for f in files), proc.stdout
    assert "\u2026" not in proc.stdout  # nothing cut with an ellipsis
    modes = {p.relative_to(out): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes
    assert os.access(out / "explanation.html", os.R_OK)
