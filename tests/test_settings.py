"""One settings table per service: it builds the service's flags (with environment fallbacks and
the old spellings as aliases), the flag tables of the README and docs/service-contract.md are
generated from it, and every environment variable the Helm chart and kustomize set is in it."""

from __future__ import annotations

import re

import pytest

from audiolime import settings
from conftest import REPO

CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # the standard AWS chain, not settings


def _block(path, service: str) -> str:
    text = (REPO / path).read_text()
    m = re.search(rf"<!-- settings:{service} -->\n(.*?)<!-- /settings -->", text, re.S)
    assert m, f"{path} has no generated settings table for {service}"
    return m.group(1)


@pytest.mark.parametrize("path,service", [("README.md", "explainer"), ("docs/service-contract.md", "explainer"),
                                          ("docs/service-contract.md", "separator"),
                                          ("docs/service-contract.md", "tagger")])
def test_documented_tables_are_the_settings_tables(path, service):
    """The documents show exactly what the table defines (regenerate: python -m audiolime.settings NAME)."""
    assert _block(path, service) == settings.markdown(settings.TABLES[service])


def _env_names(*paths) -> set[str]:
    names = set()
    for path in paths:
        names |= set(re.findall(r"name: *((?:AUDIOLIME|AWS)_[A-Z_]+)", (REPO / path).read_text()))
    return names - CREDENTIALS


def _table_env(service: str) -> set[str]:
    return {v for s in settings.TABLES[service] for v in (s.env, *s.env_aliases) if v}


@pytest.mark.parametrize("service", ["separator", "tagger", "explainer"])
def test_the_chart_and_kustomize_set_only_variables_the_service_reads(service):
    """Every variable a component's manifests set (Helm chart and kustomize base) is one of that
    service's settings; the chart's shared helpers set only variables some service reads."""
    chart = _env_names(f"deploy/helm/audiolime/templates/{service}.yaml")
    kustomize = _env_names(f"deploy/kustomize/base/{service}.yaml")
    assert chart and chart - _table_env(service) == set()
    assert kustomize - _table_env(service) == set()
    known = set().union(*(_table_env(s) for s in settings.TABLES))
    assert _env_names("deploy/helm/audiolime/templates/_helpers.tpl") - known == set()


def test_flags_take_the_environment_and_keep_their_old_spellings():
    """Flags win over variables; the separator's old admission flags and variables still work
    (--max-concurrency/--max-queue, $AUDIOLIME_SEPARATOR_MAX_*), as does --max-window-seconds; a
    malformed variable is one line naming it."""
    env = {"AUDIOLIME_SEPARATOR_MAX_QUEUE": "3", "AUDIOLIME_PORT": "6000"}
    p = settings.parser("separator", "", settings.SEPARATOR, env)
    args = p.parse_args(["--max-concurrency", "2"])
    assert (args.max_concurrent, args.max_queued, args.port) == (2, 3, 6000)
    assert p.parse_args(["--max-queue", "5", "--max-concurrent", "4"]).max_queued == 5
    assert settings.parser("e", "", settings.EXPLAINER, {}).parse_args(
        ["--max-window-seconds", "99"]).max_tagger_seconds == 99.0
    with pytest.raises(SystemExit, match=r"\$AUDIOLIME_MAX_QUEUED='x' is not a valid int"):
        settings.parser("separator", "", settings.SEPARATOR, {"AUDIOLIME_MAX_QUEUED": "x"})


def test_one_spelling_per_setting_across_services():
    """A flag means one thing: where two services share a flag, they share its variable."""
    seen: dict[str, str | None] = {}
    for table in settings.TABLES.values():
        for s in table:
            assert seen.setdefault(s.flag, s.env) == s.env, s.flag
    assert {"--max-concurrent", "--max-queued"} <= {s.flag for s in settings.SEPARATOR}
