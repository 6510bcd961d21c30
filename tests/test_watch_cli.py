"""``evalbot watch`` from the command line: --once, --dry-run, and one clear line for bad input."""

from __future__ import annotations

import pytest
from fake_evaluator import evaluations
from watch_support import BOT, TOKEN, Bot, world

pytestmark = pytest.mark.slow


def one_error_line(output: str, needle: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error:") and needle in lines[0], output
    assert "Traceback" not in output and TOKEN not in output


def test_once_polls_evaluates_publishes_and_exits_0(tmp_path):
    with world(tmp_path) as w:
        sha = w.pr_branch(w.repo, "feature", "XS")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        rc, out = Bot(w, "once", "--once").finish()
        assert rc == 0, out
        assert ("done", sha) in evaluations(w.evaldir)
        assert len(w.standin.bot_comments(pull, BOT)) == 1 and pull.labels == ["eval:XS"]
        assert "poll: 2 queued, 0 dropped, 2 evaluated, 0 failed, 2 published, 0 errors" in out


def test_dry_run_once_writes_nothing_anywhere(tmp_path):
    with world(tmp_path) as w:
        sha = w.pr_branch(w.repo, "feature", "XS")
        w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        rc, out = Bot(w, "dry", "--once", "--dry-run").finish()
        assert rc == 0, out
        assert ("done", sha) in evaluations(w.evaldir)
        assert w.standin.writes() == []
        assert not (tmp_path / "data" / "ledger.sqlite").exists()
        assert "dry run: would publish XS on pr/1" in out


def test_once_reports_github_down_with_exit_1(tmp_path):
    with world(tmp_path, retries=1) as w:
        w.standin.fail(502, times=100)
        rc, out = Bot(w, "down", "--once").finish()
        assert rc == 1, out
        assert ("listing open pull requests of acme/kernels: GitHub kept failing, retries spent "
                "(too many 502 error responses)") in out
        assert "Traceback" not in out


@pytest.mark.parametrize(("change", "needle"), [
    ({"repo": ""}, "[github] repo is not set"),
    ({"repo": "no-slash"}, "[github] repo: expected 'owner/name'"),
    ({"token_file": "", "token_env": "EVALBOT_TEST_UNSET_TOKEN"}, "no GitHub token"),
    ({"max_attempts": 0}, "[github] max_attempts: must be at least 1"),
])
def test_bad_settings_are_one_line(tmp_path, change, needle):
    with world(tmp_path) as w:
        text = w.config_path.read_text()
        for key, value in change.items():
            lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
            rendered = f'"{value}"' if isinstance(value, str) else str(value)
            lines.insert(lines.index("[github]") + 1, f"{key} = {rendered}")
            text = "\n".join(lines) + "\n"
        w.config_path.write_text(text)
        rc, out = Bot(w, "bad", "--once").finish()
        assert rc == 2
        one_error_line(out, needle)


def test_unknown_evaluator_is_one_line(tmp_path):
    with world(tmp_path) as w:
        rc, out = Bot(w, "bad", "--once", "--evaluator", "nowhere_module:create").finish()
        assert rc == 2
        one_error_line(out, "cannot import nowhere_module")


def test_missing_signing_key_is_one_line(tmp_path):
    with world(tmp_path) as w:
        text = w.config_path.read_text().replace('signing_key = "', 'signing_key = "/nonexistent')
        w.config_path.write_text(text)
        rc, out = Bot(w, "bad", "--once").finish()
        assert rc == 2
        one_error_line(out, "/nonexistent")
