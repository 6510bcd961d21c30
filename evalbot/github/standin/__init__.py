"""A local GitHub stand-in: the REST calls evalbot makes, served on 127.0.0.1 over real git repositories.

The poller's tests run against it, and so does ``evalbot demo``, which shows ``evalbot watch`` at work
without GitHub. :mod:`.server` has the HTTP server and its fault injection, :mod:`.bodies` the JSON
shapes (checked against recorded real responses), :mod:`.git` the bare repositories behind it.
"""

from evalbot.github.standin.bodies import Comment, Label, Pull, Repo, Status, User
from evalbot.github.standin.server import GithubStandin

__all__ = ["Comment", "GithubStandin", "Label", "Pull", "Repo", "Status", "User"]
