"""`testbed remote run`: a matrix sharded over a lab of machines reached by SSH (Fabric).

The controller validates the spec locally, checks every host (host key, `testbed doctor`),
ships the project as one content-addressed tarball, hands out one cell per shard to whichever
healthy host is free, collects each shard's files into DIR/<host>/ and merges everything into
one matrix.json with matrix.py's own writers. Modules, one concern each: hosts (the --hosts
grammar), keys (known_hosts policy), command (quoting: the only place remote command lines are
built), ship (the project tarball), session (SSH connection and remote processes), shard (the
work queue and its retries), merge (one matrix from the shards), agent (the remote side),
command_line (the subcommand).
"""
