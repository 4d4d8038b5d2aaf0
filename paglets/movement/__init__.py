"""Movement between hosts: dispatch, retract and clone with exactly one live copy.

`paglets.movement.source` sends a paglet's envelope and settles the outcome;
`paglets.movement.target` receives, commits and starts it;
`paglets.movement.service` composes both with the host's journal, answers the
paglets' own movement calls, and recovers unfinished transfers after a restart.
"""
