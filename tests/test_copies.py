"""Copy detection: renamed, reflowed and extended copies are flagged; independent kernels are not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from copies_support import disguise

from evalbot import copies
from evalbot.copies import Contribution, CopyError, Override
from evalbot.policy import Decision, load_policy

ROOT = Path(__file__).parents[1]
RULE = load_policy().copies
BASELINE = copies.tree_sources(ROOT / "reference_runtime" / "cuda")
FASTER = (ROOT / "evalbot" / "example_kernels" / "gemv_q4_k_faster.cu").read_text()
COMMON = copies.boilerplate(BASELINE, RULE)

RMSNORM_A, RMSNORM_B = (p.read_text() for p in sorted((ROOT / "tests" / "data" / "copies").glob("rmsnorm_*.cu")))


def pr(number: int, author: str, sources: dict[str, str]) -> Contribution:
    return Contribution(number, author, f"{number:040x}", sources)


def test_a_renamed_reflowed_copy_of_another_pr_is_a_derivative():
    original = pr(7, "alice", {"src/gemv_q4_k.cu": FASTER})
    copy = pr(9, "mallory", {"kernels/q4k.cu": disguise(FASTER)})
    assert disguise(FASTER) != FASTER and "q4k_scale_min" not in disguise(FASTER)
    finding = copies.check(copy, [original], RULE, COMMON)
    assert finding.level == "block" and finding.worst is not None and finding.worst.similarity >= RULE.block
    assert finding.reason(RULE).startswith("derivative of #7 (@alice), similarity ")


def test_a_copy_with_more_work_on_top_carries_the_earlier_win():
    # Its measured speedup includes alice's kernel, so it is a derivative of hers, though a quarter
    # of its code is new.
    original = pr(7, "alice", {"src/gemv_q4_k.cu": FASTER})
    extended = pr(9, "mallory", {"src/gemv_q4_k.cu": disguise(FASTER), "src/rmsnorm.cu": RMSNORM_A})
    finding = copies.check(extended, [original], RULE, COMMON)
    m = finding.worst
    assert m is not None and m.inside < RULE.block <= m.contains and finding.level == "block"
    assert f"{m.contains:.0%} of #7's is in this PR" in finding.reason(RULE)


def test_independent_kernels_are_not_flagged():
    # Every pair of the baseline's kernel files, the example's faster kernel against the baseline's,
    # and two independently written rmsnorm kernels: all below the warning threshold.
    files = {p: t for p, t in BASELINE.items() if p.endswith(".cu")}
    files["example/gemv_q4_k_faster.cu"] = FASTER
    files["a/rmsnorm.cu"], files["b/rmsnorm.cu"] = RMSNORM_A, RMSNORM_B
    header = copies.boilerplate({p: t for p, t in BASELINE.items() if not p.endswith(".cu")}, RULE)
    sims = {(a, b): copies.similarity({a: files[a]}, {b: files[b]}, RULE, header)
            for a in files for b in files if a != b}
    worst = max(sims, key=lambda k: sims[k])
    assert sims[worst] < RULE.warn, (worst, sims[worst])
    assert len(sims) == len(files) * (len(files) - 1) >= 90


def test_the_frontiers_code_is_common_ground():
    # Two PRs that each tweak the frontier's gemv file differently share the frontier's code only.
    base = BASELINE["kernels/gemv.cu"]
    a = pr(3, "alice", {"kernels/gemv.cu": base.replace("for (", "#pragma unroll 4\n    for (", 1)})
    b = pr(4, "bob", {"kernels/gemv.cu": base + "\n" + RMSNORM_B})
    assert copies.check(b, [a], RULE).level == "block"  # without the frontier as common ground
    assert copies.check(b, [a], RULE, COMMON).level == "ok"
    # alice's one-line change is too small to call a copy of anything (min_coverage).
    assert copies.check(a, [b], RULE, COMMON).level == "ok"


def test_own_work_and_reviewed_overrides_are_not_matched():
    original = pr(7, "alice", {"x.cu": FASTER})
    other = pr(8, "carol", {"y.cu": disguise(FASTER).replace("v0_renamed", "w0") + RMSNORM_B})
    assert copies.check(pr(9, "alice", {"z.cu": FASTER}), [original], RULE, COMMON).level == "ok"
    waived = copies.check(pr(9, "bob", {"z.cu": disguise(FASTER)}), [original, other], RULE, COMMON,
                          [Override("bob", 7, "co-authored with alice, reviewed in #12")])
    assert [m.earlier.pr for m in waived.matches if m.overridden] == [7]
    assert waived.worst is not None and waived.worst.earlier.pr == 8  # the next one still counts


def test_a_derivative_earns_none_and_a_reject_stays_a_reject():
    finding = copies.check(pr(9, "mallory", {"a.cu": disguise(FASTER)}), [pr(7, "alice", {"b.cu": FASTER})],
                           RULE, COMMON)
    won = Decision("M", ("closes 12% of the headroom",), 0.12, {"m": 0.12})
    none = copies.apply(won, finding, RULE)
    assert none.label == "none" and none.reasons[0].startswith("derivative of #7 (@alice)")
    assert none.reasons[1] == "measured: closes 12% of the headroom"
    rejected = Decision("REJECT", ("gate top1 failed",), None, {})
    assert copies.apply(rejected, finding, RULE) is rejected
    warned = copies.CopyFinding("warn", finding.worst, finding.matches)
    kept = copies.apply(won, warned, RULE)
    assert kept.label == "M" and kept.reasons[-1].startswith("warning: similar to #7 (@alice)")


def test_contributed_is_what_the_head_adds_or_changes(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.cu").write_text("kernel a")
    (tmp_path / "src" / "b.cuh").write_text("header b")
    (tmp_path / "README.md").write_text("not a kernel")
    (tmp_path / "link.cu").symlink_to(tmp_path / "src" / "a.cu")
    head = copies.tree_sources(tmp_path)
    assert head == {"src/a.cu": "kernel a", "src/b.cuh": "header b"}
    assert copies.contributed(head, {"src/a.cu": "kernel a"}) == {"src/b.cuh": "header b"}


def test_attributions_file_is_checked_and_named(tmp_path):
    good = '[[override]]\nauthor = "bob"\nearlier_pr = 7\nreason = "co-authored"\n'
    assert copies.parse_attributions(good, "a.toml") == [Override("bob", 7, "co-authored")]
    for text, message in [
        ("[[override]]\nauthor = 'bob'\nearlier_pr = 7\n", "needs exactly author, earlier_pr and reason"),
        ("[[override]]\nauthor = 'bob'\nearlier_pr = true\nreason = 'x'\n", "earlier_pr must be a PR number"),
        ("[[override]]\nauthor = ''\nearlier_pr = 7\nreason = 'x'\n", "non-empty strings"),
        ("owner = 1\n", "unknown key 'owner'"),
        ("[[override]\n", "not valid TOML"),
        ("x = " + "[" * 100 + "]" * 100 + "\n", "not valid TOML"),
    ]:
        with pytest.raises(CopyError, match=re.escape(message)):
            copies.parse_attributions(text, "a.toml")
    tree = tmp_path / "frontier"
    (tree / ".evalbot").mkdir(parents=True)
    (tree / copies.ATTRIBUTIONS).write_text(good)
    assert copies.load_attributions(tree) == [Override("bob", 7, "co-authored")]
    assert copies.load_attributions(None) == [] == copies.load_attributions(tmp_path)


def test_the_watch_evaluator_flags_a_pr_that_copies_an_earlier_one(tmp_path):
    # Real git: alice's PR adds the faster kernel, mallory's a disguised copy of it, carol's her own
    # rmsnorm. Each is checked against the contributions recorded before it, with the base's code as
    # common ground, then recorded itself.
    from evalbot.config import BasketConfig, Config, PathsConfig
    from evalbot.evaluator import WatchEvaluator
    from evalbot.fetch import Mirror
    from evalbot.github.standin import git as sgit
    from evalbot.pipeline import Job

    bare = sgit.init_bare(tmp_path / "upstream.git")
    tree = {"kernels.toml": "version = 1\n", "gemv.cu": BASELINE["kernels/gemv.cu"]}
    base = sgit.commit(bare, tree, "base", "maintainer", None, 1_700_000_000)
    sgit.set_ref(bare, "refs/heads/main", base)
    heads = {}
    for n, (author, files) in enumerate([("alice", {"gemv_q4_k.cu": FASTER}),
                                         ("mallory", {"q4k.cu": disguise(FASTER)}),
                                         ("carol", {"rmsnorm.cu": RMSNORM_B})], start=1):
        heads[n] = sgit.commit(bare, {**tree, **files}, f"PR {n}", author, base, 1_700_000_000 + n)
        sgit.set_ref(bare, f"refs/pull/{n}/head", heads[n])
    config = Config(basket=BasketConfig(set="tiny"), paths=PathsConfig(data_dir=str(tmp_path / "data"),
                                                                       cache_dir=str(tmp_path / "cache")))
    evaluator = WatchEvaluator(config)
    mirror = Mirror(config.cache_dir, str(bare))
    findings = {}
    for n, author in [(1, "alice"), (2, "mallory"), (3, "carol")]:
        job = Job(repo="acme/kernels", sha=heads[n], clone_url=str(bare), fetch_ref=f"refs/pull/{n}/head",
                  author=author, base_ref="main", base_sha=base, baseline_sha=base, pr_number=n)
        mirror.fetch_commit(base, refs=("refs/heads/main",))
        mirror.fetch_commit(job.sha, refs=(job.fetch_ref,), contributor=True)
        work = tmp_path / f"job{n}"
        work.mkdir()
        front = mirror.export(base, work / "frontier")
        check = evaluator._copy_check(job, mirror.export(job.sha, work / "candidate"), front, front)
        # The contribution is the file the PR adds, not the base's files it carries along.
        assert list(check.candidate.sources) == [{1: "gemv_q4_k.cu", 2: "q4k.cu", 3: "rmsnorm.cu"}[n]]
        findings[n] = check.run(RULE)
    assert findings[1].level == "ok" and findings[1].matches == ()
    assert findings[2].level == "block" and findings[2].reason(RULE).startswith("derivative of #1 (@alice)")
    assert findings[3].level == "ok" and {m.earlier.pr for m in findings[3].matches} == {1, 2}


def test_the_contribution_store_is_bounded_and_survives_a_damaged_file(tmp_path, monkeypatch):
    from evalbot import contribution_store
    from evalbot.contribution_store import ContributionStore

    monkeypatch.setattr(contribution_store, "MAX_KEPT", 3)
    clock = iter(range(1_700_000_000, 1_700_000_100))
    monkeypatch.setattr(contribution_store.time, "time", lambda: float(next(clock)))
    store = ContributionStore(tmp_path, "acme/kernels")
    for n in range(5):
        store.record(pr(n + 1, f"author{n}", {"k.cu": f"// {n}"}))
    assert [c.pr for c in store.earlier("none")] == [3, 4, 5]  # the oldest went, oldest first
    (store.dir / f"{4:040x}.json").write_text("{not json")
    assert [c.pr for c in store.earlier(f"{5:040x}")] == [3]  # seen before #5 only; the damaged one dropped
    assert not (store.dir / f"{4:040x}.json").exists()
    assert ContributionStore(tmp_path, "other/repo").earlier("x") == []


def test_an_original_measured_again_is_not_the_copy_of_its_copy(tmp_path):
    # The frontier moves and both PRs are re-evaluated, the copy first: the original's head was
    # seen first, so only the copy is compared with it.
    from evalbot.contribution_store import ContributionStore

    store = ContributionStore(tmp_path, "acme/kernels")
    original, copy = pr(7, "alice", {"a.cu": FASTER}), pr(9, "mallory", {"b.cu": disguise(FASTER)})
    store.record(original)
    store.record(copy)
    store.record(copy)  # re-recorded on its re-evaluation: keeps its first-seen time
    assert [c.pr for c in store.earlier(original.commit)] == []
    assert [c.pr for c in store.earlier(copy.commit)] == [7]
    assert copies.check(original, store.earlier(original.commit), RULE, COMMON).level == "ok"
    assert copies.check(copy, store.earlier(copy.commit), RULE, COMMON).level == "block"
