"""Copy detection: how much of a contribution's kernel code is already in an earlier one.

SN74 pays for the speedup a PR adds over the best before it, so copying another contributor's open
PR (or the leader) and adding a tweak must earn what the tweak adds, not the copied win. Each
contribution (the kernel sources a PR adds or changes against its base) is fingerprinted with
winnowing (copydetect, after Schleimer, Wilkerson and Aiken's MOSS): the code is tokenized by
Pygments' CUDA lexer, identifiers, function names and strings collapse to one symbol each,
comments and whitespace are dropped, and the k-grams' hashes are winnowed. Renaming variables or
reflowing a file changes nothing; only rewriting the code does. The frontier's own sources (and
the runtime's baseline kernels) are boilerplate: code everyone starts from is never a copy.

The similarity is containment, taken both ways: the fraction of the candidate's fingerprinted code
found in the earlier contribution (a disguised copy), or of the earlier one's found in the candidate
(a copy with more work on top, whose measured speedup still carries the earlier PR's win).
"""

from __future__ import annotations

import io
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalbot import bounded_toml
from evalbot.errors import EvalbotError
from evalbot.policy import CopyRule, Decision

if TYPE_CHECKING:
    from copydetect import CodeFingerprint

SOURCE_SUFFIXES = (".cu", ".cuh", ".h", ".hpp", ".inl")
MAX_SOURCE_BYTES = 256 << 10  # per contribution: bounds the store and the tokenizer (kernel sources run to tens of KiB)
ATTRIBUTIONS = ".evalbot/attributions.toml"  # in the frontier's tree: overrides are reviewed by merging


class CopyError(EvalbotError):
    """A malformed attributions file (in the frontier's tree, so the maintainers' to fix)."""


@dataclass(frozen=True)
class Contribution:
    """One PR head's kernel code: ``sources`` maps a path to the text the PR adds or changes."""
    pr: int | None
    author: str
    commit: str
    sources: Mapping[str, str]

    @property
    def name(self) -> str:
        return f"#{self.pr}" if self.pr is not None else self.commit[:12]


@dataclass(frozen=True)
class Override:
    """A reviewed exception: ``author``'s PRs may reuse the code of ``earlier_pr`` (co-authors, a
    sanctioned fork of a stale PR)."""
    author: str
    earlier_pr: int
    reason: str


@dataclass(frozen=True)
class Match:
    earlier: Contribution
    inside: float  # the share of the candidate's fingerprinted code found in ``earlier``
    contains: float  # the share of ``earlier``'s found in the candidate
    overridden: Override | None = None

    @property
    def similarity(self) -> float:
        return max(self.inside, self.contains)


@dataclass(frozen=True)
class CopyFinding:
    level: str  # "ok", "warn" or "block"
    worst: Match | None  # the highest match not overridden
    matches: tuple[Match, ...]  # every earlier contribution by another author, highest first

    def to_dict(self, limit: int = 5) -> dict[str, Any]:
        """For the verdict document's details: the level and the closest matches."""
        return {"level": self.level, "matches": [
            {"pr": m.earlier.pr, "author": m.earlier.author, "commit": m.earlier.commit, "inside": m.inside,
             "contains": m.contains, "overridden": m.overridden.reason if m.overridden else None}
            for m in self.matches[:limit]]}

    def reason(self, rule: CopyRule) -> str:
        if self.worst is None:
            return "no earlier contribution by another author to compare with"
        m = self.worst
        what = {"block": "derivative of", "warn": "similar to", "ok": "closest earlier contribution:"}[self.level]
        return (f"{what} {m.earlier.name} (@{m.earlier.author}), similarity {m.similarity:.2f} "
                f"({m.inside:.0%} of this PR's kernel code is in {m.earlier.name}, {m.contains:.0%} of "
                f"{m.earlier.name}'s is in this PR; a warning from {rule.warn:.2f}, `none` from {rule.block:.2f})")


@dataclass(frozen=True)
class CopyCheck:
    """What a verdict is checked against: the candidate, the earlier contributions, the common ground."""
    candidate: Contribution
    earlier: Sequence[Contribution]
    common: frozenset[int]
    overrides: Sequence[Override] = ()

    def run(self, rule: CopyRule) -> CopyFinding:
        return check(self.candidate, self.earlier, rule, self.common, self.overrides)


def _fingerprint(text: str, rule: CopyRule, boilerplate: Iterable[int] = ()) -> CodeFingerprint:
    from copydetect import CodeFingerprint  # imports matplotlib: only when a check runs

    return CodeFingerprint("contribution.cu", rule.noise, rule.guarantee - rule.noise + 1,
                           boilerplate=list(boilerplate), language="cuda", fp=io.StringIO(text))


def _document(sources: Mapping[str, str]) -> str:
    # One document per contribution, in path order, so code moved between files still matches.
    return "\n".join(sources[p] for p in sorted(sources))


def boilerplate(sources: Mapping[str, str], rule: CopyRule) -> frozenset[int]:
    """The fingerprints of code every contributor starts from (the frontier's tree, the baseline kernels)."""
    return frozenset(_fingerprint(_document(sources), rule).hashes)


def _containment(a: CodeFingerprint, b: CodeFingerprint, rule: CopyRule) -> tuple[float, float]:
    # A side with less original code than min_coverage (one changed loop) matches by coincidence:
    # the few k-grams it has are likely somewhere in any kernel of the same slot.
    from copydetect import compare_files

    if not a.hashes or not b.hashes:
        return 0.0, 0.0
    inside, contains = compare_files(a, b)[1]
    return (float(inside) if a.token_coverage >= rule.min_coverage else 0.0,
            float(contains) if b.token_coverage >= rule.min_coverage else 0.0)


def similarity(candidate: Mapping[str, str], earlier: Mapping[str, str], rule: CopyRule,
               common: Iterable[int] = ()) -> float:
    """The share of ``candidate``'s fingerprinted code (less ``common``) found in ``earlier``."""
    common = list(common)
    return _containment(_fingerprint(_document(candidate), rule, common),
                        _fingerprint(_document(earlier), rule, common), rule)[0]


def check(candidate: Contribution, earlier: Sequence[Contribution], rule: CopyRule,
          common: Iterable[int] = (), overrides: Sequence[Override] = ()) -> CopyFinding:
    """Compare ``candidate`` with every earlier contribution by another author."""
    common = frozenset(common)
    mine = _fingerprint(_document(candidate.sources), rule, common)
    matches: list[Match] = []
    for other in earlier:
        if other.author == candidate.author or other.commit == candidate.commit:
            continue
        inside, contains = _containment(mine, _fingerprint(_document(other.sources), rule, common), rule)
        waived = next((o for o in overrides if o.author == candidate.author and o.earlier_pr == other.pr), None)
        matches.append(Match(other, inside, contains, waived))
    matches.sort(key=lambda m: -m.similarity)
    worst = next((m for m in matches if m.overridden is None), None)
    level = ("block" if worst and worst.similarity >= rule.block else
             "warn" if worst and worst.similarity >= rule.warn else "ok")
    return CopyFinding(level, worst, tuple(matches))


def apply(decision: Decision, finding: CopyFinding, rule: CopyRule) -> Decision:
    """A derivative earns `none` (a REJECT stays a REJECT); a near one keeps its label with a warning."""
    if decision.label == "REJECT" or finding.level == "ok":
        return decision
    reason = finding.reason(rule)
    if finding.level == "block":
        return Decision("none", (reason, *(f"measured: {r}" for r in decision.reasons)), decision.score,
                        decision.per_model)
    return Decision(decision.label, (*decision.reasons, f"warning: {reason}"), decision.score, decision.per_model)


def for_candidate(candidate: Contribution, earlier: Sequence[Contribution], common_trees: Iterable[Path | None],
                  rule: CopyRule, frontier: Path | None) -> CopyCheck:
    """The check of ``candidate``: the runtime's baseline kernels and ``common_trees`` (the frontier's
    and the PR base's sources) are common ground; the frontier's attributions file the overrides."""
    from reference_runtime.runtime.abi import cuda_dir

    common: dict[str, str] = {f"runtime/{p}": t for p, t in tree_sources(cuda_dir()).items()}
    for i, tree in enumerate(common_trees):
        if tree is not None:
            common.update({f"{i}/{p}": t for p, t in tree_sources(tree).items()})
    return CopyCheck(candidate, earlier, boilerplate(common, rule), load_attributions(frontier))


def tree_sources(tree: Path) -> dict[str, str]:
    """Every kernel source in an exported tree (paths relative to it), bounded in total size."""
    out: dict[str, str] = {}
    total = 0
    for path in sorted(tree.rglob("*")):
        if path.suffix not in SOURCE_SUFFIXES or path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()[: MAX_SOURCE_BYTES - total]
        total += len(data)
        out[path.relative_to(tree).as_posix()] = data.decode("utf-8", errors="replace")
        if total >= MAX_SOURCE_BYTES:
            break
    return out


def contributed(candidate: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
    """What a head adds or changes against its base: files new or different (whole files, so a
    copied kernel dropped beside an unchanged one is still all there)."""
    return {p: t for p, t in candidate.items() if base.get(p) != t}


def parse_attributions(text: str, source: str) -> list[Override]:
    """The reviewed overrides: ``[[override]]`` tables of ``author``, ``earlier_pr`` and ``reason``."""
    try:
        doc: dict[str, Any] = bounded_toml.loads(text)
    except (bounded_toml.NestingError, tomllib.TOMLDecodeError) as exc:
        raise CopyError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(doc) - {"override"}
    if unknown:
        raise CopyError(f"{source}: unknown key {sorted(unknown)[0]!r} (known: override)")
    out = []
    for i, entry in enumerate(doc.get("override", [])):
        where = f"{source}: override {i + 1}"
        if not isinstance(entry, dict) or set(entry) != {"author", "earlier_pr", "reason"}:
            raise CopyError(f"{where}: needs exactly author, earlier_pr and reason")
        author, pr, reason = entry["author"], entry["earlier_pr"], entry["reason"]
        if not isinstance(author, str) or not author or not isinstance(reason, str) or not reason.strip():
            raise CopyError(f"{where}: author and reason must be non-empty strings")
        if isinstance(pr, bool) or not isinstance(pr, int) or pr < 1:
            raise CopyError(f"{where}: earlier_pr must be a PR number, got {pr!r}")
        out.append(Override(author, pr, reason))
    return out


def load_attributions(frontier_tree: Path | None) -> list[Override]:
    """The overrides the frontier's tree holds (none without a frontier or without the file)."""
    if frontier_tree is None:
        return []
    path = frontier_tree / ATTRIBUTIONS
    if path.is_symlink() or not path.is_file():
        return []
    return parse_attributions(path.read_bytes()[:1 << 20].decode("utf-8", errors="replace"), ATTRIBUTIONS)
