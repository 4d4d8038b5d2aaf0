"""Git auto-update: a host that runs from a git checkout follows its branch.

``paglets-host --git-auto-update`` fetches the branch, and on a new commit
fast-forwards, syncs the dependencies from the lock file, checks the new code in
a process of its own and re-executes itself on it, one host of the mesh at a
time; a failure leaves it on (or puts it back on) its old commit. The guide is
``docs/auto-update.md``.

The package: `paglets.update.git` (the git commands), `paglets.update.steps`
(``uv sync`` and the check), `paglets.update.selfcheck` (the check itself, run
with the new code), `paglets.update.lease` (one host at a time),
`paglets.update.marker` (what crosses the re-execution),
`paglets.update.updater` (``Updater``, the loop) and `paglets.update.restart`
(serving with an updater, and the re-execution).
"""
