"""The bearer-token file in-process (the servers that check tokens: tests/test_security.py)."""

from __future__ import annotations

import secrets

import pytest


def test_the_token_file_is_re_read_after_its_interval(tmp_path):
    """In-process, with the clock injected: a changed file is not read before the re-check interval,
    is read after it; a broken one refuses every token (below)."""
    from audiolime.server.auth import TokenFile

    path = tmp_path / "tokens"
    old, new = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    path.write_text(f"ci:{old}\n")
    now = [1000.0]
    tokens = TokenFile(path, recheck_s=60, clock=lambda: now[0])
    assert tokens.caller(old) == "ci" and tokens.caller(new) is None
    path.write_text(f"ci:{new}\n")
    now[0] += 59
    assert tokens.caller(new) is None and tokens.caller(old) == "ci"  # not re-read yet
    now[0] += 2
    assert tokens.caller(new) == "ci" and tokens.caller(old) is None
    path.write_text("ci:short\n")
    now[0] += 61
    assert tokens.caller(new) is None  # fails closed


@pytest.mark.parametrize("breakage", ["empty", "deleted", "comments only", "one malformed line", "unreadable"])
def test_an_unusable_token_file_refuses_everyone_until_fixed(tmp_path, breakage):
    """Emptied, deleted, commented out, one bad line among good ones, or a directory in its place:
    within one re-check interval no token is valid (the old ones included), the failure is counted
    and the token gauge is 0; a fixed file is used again."""
    from audiolime.server import metrics
    from audiolime.server.auth import TokenFile

    path = tmp_path / "tokens"
    good, other = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    path.write_text(f"ci:{good}\nops:{other}\n")
    now = [0.0]
    tokens = TokenFile(path, recheck_s=5, clock=lambda: now[0])
    assert tokens.caller(good) == "ci" and metrics.AUTH_TOKENS._value.get() == 2
    errors_before = metrics.AUTH_TOKEN_FILE_ERRORS._value.get()
    if breakage == "empty":
        path.write_text("")
    elif breakage == "deleted":
        path.unlink()
    elif breakage == "comments only":
        path.write_text(f"# ci:{good}\n# ops:{other}\n")
    elif breakage == "one malformed line":
        path.write_text(f"ci:{good}\nops:{other}\nbroken: a b c\n")
    else:
        path.unlink()
        path.mkdir()
    now[0] += 5
    assert tokens.caller(good) is None and tokens.caller(other) is None
    assert metrics.AUTH_TOKEN_FILE_ERRORS._value.get() == errors_before + 1
    assert metrics.AUTH_TOKENS._value.get() == 0
    now[0] += 5
    assert tokens.caller(good) is None  # still closed (the file did not change again)
    if path.is_dir():
        path.rmdir()
    path.write_text(f"ci:{good}\n")
    now[0] += 5
    assert tokens.caller(good) == "ci" and tokens.caller(other) is None
    assert metrics.AUTH_TOKENS._value.get() == 1
