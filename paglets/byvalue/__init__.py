"""Paglet classes shipped by value: defined in a script or a notebook, run on a host.

A class that other processes cannot import by module path (defined in
``__main__``, a script or a notebook cell) travels as code: the client pickles
it with cloudpickle, the host keeps the bytes by their SHA-256, and the
paglet's child rebuilds the class from them. Only the class travels so; the
state still travels as the strict JSON envelope, and no other input is ever
unpickled.

Code by value is code execution by design, so a host runs it only where its
operator said so: code registered in the host's own process (an embedded
`Host`: the code already runs there), or any code from a key holder on a host
started with ``--trust-code-by-value``.

- `paglets.byvalue.refs`: the by-value class path and the code's hash (the wire form);
- `paglets.byvalue.pickling`: pickling a class (client side) and rebuilding it (child side);
- `paglets.byvalue.local`: the code this process registered, and the hosts it runs;
- `paglets.byvalue.store`: the host's code store and the trust rule;
- `paglets.byvalue.routes`: ``PUT /v1/code/{sha256}``;
- `paglets.byvalue.shipping`: sending code to a host, from a client or a host.
"""
