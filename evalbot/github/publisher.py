"""Publishing a result on GitHub: the sticky comment, the ``eval:<LABEL>`` label, a commit status.

Every step converges on the desired end state instead of replaying an action, so publishing the same
result twice (a retry after a fault, a restart after a kill) changes nothing the second time: the
comment is found by its marker and author and edited only if its text differs, labels are diffed
against what the PR carries, and a repeated commit status replaces the previous one for our context.
Never merges, never closes.
"""

from __future__ import annotations

from github import GithubException

from evalbot.github.client import GithubClient
from evalbot.github.sticky import MARKER, Outcome, render
from evalbot.quote import plain

LABEL_PREFIX = "eval:"
_LABEL_COLORS = {
    "XL": "0e8a16",
    "L": "2ea44f",
    "M": "5cc26f",
    "S": "a2dca6",
    "XS": "d4f2d6",
    "none": "cccccc",
    "REJECT": "b60205",
}
# GitHub truncates nothing here: it refuses descriptions over 140 characters. The description is
# plain text, but the summary quotes contributor text: plain() keeps it one line and bounded.
_STATUS_DESCRIPTION_MAX = 140


def label_name(label: str) -> str:
    return f"{LABEL_PREFIX}{label}"


class Publisher:
    def __init__(self, client: GithubClient, context: str) -> None:
        self.client = client
        self.context = context
        self._labels_known: set[str] = set()

    def publish_pull(self, number: int, current: Outcome, earlier: list[Outcome], set_label: bool) -> None:
        """Comment, label (when ``set_label``: ``current`` is still the PR's head) and commit status."""
        url = self.sticky_comment(number, render(current, earlier))
        if set_label:
            self.labels(number, current.label)
        self.status(current, url)

    def status(self, outcome: Outcome, target_url: str | None = None, *, unless_set: bool = False) -> None:
        """Set the commit status; ``unless_set``: not when the commit's newest status of our context
        says the same already (a publisher killed between setting it and noting that it did)."""
        if outcome.label is None:
            state = "error"
        else:
            state = "failure" if outcome.label == "REJECT" else "success"
        text = plain(f"{outcome.label or 'error'}: {outcome.summary}", _STATUS_DESCRIPTION_MAX)
        with self.client.call(f"setting the commit status of {outcome.sha[:12]}"):
            commit = self.client.repo.get_commit(outcome.sha)
            if unless_set:
                for existing in commit.get_statuses():
                    if existing.context == self.context:
                        if existing.state == state and existing.description == text:
                            return
                        break
            if target_url:
                commit.create_status(state, target_url=target_url, description=text, context=self.context)
            else:
                commit.create_status(state, description=text, context=self.context)

    def sticky_comment(self, number: int, body: str) -> str:
        """Create or update our one comment on PR ``number``; returns its URL."""
        return self._sticky(number, body)[1]

    def set_sticky(self, number: int, body: str, known_id: int | None = None) -> int:
        """Like :meth:`sticky_comment`, by the comment's id when the caller knows it (one request, no
        listing); returns the id. A comment deleted meanwhile is looked for, or created, again."""
        if known_id is not None:
            with self.client.call(f"updating the evalbot comment on PR #{number}"):
                try:
                    self.client.repo.get_issue(number).get_comment(known_id).edit(body)
                    return known_id
                except GithubException as exc:
                    if exc.status != 404:
                        raise
        return self._sticky(number, body)[0]

    def _sticky(self, number: int, body: str) -> tuple[int, str]:
        me = self.client.login()
        with self.client.call(f"updating the evalbot comment on PR #{number}"):
            issue = self.client.repo.get_issue(number)
            for comment in issue.get_comments():
                # The author check keeps a contributor's comment that carries the marker untouched; the
                # marker opens every body we write, so a comment of ours that merely quotes it is not it.
                author = comment.user.login if comment.user is not None else None
                if (comment.body or "").startswith(MARKER) and author == me:
                    if comment.body != body:
                        comment.edit(body)
                    return comment.id, comment.html_url
            created = issue.create_comment(body)
            return created.id, created.html_url

    def labels(self, number: int, label: str | None) -> None:
        """Make ``eval:<label>`` the PR's only ``eval:*`` label (none at all for ``label=None``)."""
        wanted = label_name(label) if label is not None else None
        with self.client.call(f"updating the eval labels of PR #{number}"):
            issue = self.client.repo.get_issue(number)
            present = [lab.name for lab in issue.get_labels()]
            for name in present:
                if name.startswith(LABEL_PREFIX) and name != wanted:
                    try:
                        issue.remove_from_labels(name)
                    except GithubException as exc:
                        if exc.status != 404:  # already removed by someone else: the goal holds
                            raise
            if wanted is not None and wanted not in present:
                assert label is not None
                self._ensure_label(label)
                issue.add_to_labels(wanted)

    def _ensure_label(self, label: str) -> None:
        """Create the repository label with evalbot's colour when it does not exist yet."""
        name = label_name(label)
        if name in self._labels_known:
            return
        if not self.client.label_exists(name):
            with self.client.call(f"creating the label {name!r}"):
                try:
                    self.client.repo.create_label(name, _LABEL_COLORS[label], f"evalbot verdict: {label}")
                except GithubException as exc:
                    if exc.status != 422:  # 422: created meanwhile, which is what we want
                        raise
        self._labels_known.add(name)
