"""user-info: notifications from paglets to the person, kept and served by each host.

A paglet calls ``self.context.notify(title, message, severity=..., job=...)`` or
appends lines to a named text stream (``self.context.stream(name).write(line)``);
its host logs each one, keeps a bounded history on disk and answers
``GET /v1/user-info`` (with a bounded long poll for ``follow``). The
``paglets-user-info`` command collects them across the mesh.

- `paglets.userinfo.model`: `Notice` and `Severity`, every field checked where parsed;
- `paglets.userinfo.journal`: `NoticeLog`, the bounded, durable history of one host;
- `paglets.userinfo.routes`: the route, and the call paglets make.
"""
