"""Download one remote directory the way the controller downloads a shard, and say what happened.

Run inside the lab's controller namespace (`ip netns exec CTL python -m ...`): it connects with
the lab's key, config and known hosts through `testbed.remote.session.connect`, calls
`download_tree`, and prints one JSON line: {"files": N} or {"refused": "<the HostLost line>"}.
The tampered-shard tests use it for the kinds of file the whole-controller test does not plant.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from testbed.remote.hosts import parse_host
from testbed.remote.session import HostLost, SshOptions, connect, download_tree


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ssh-config", type=Path, required=True)
    parser.add_argument("--known-hosts", type=Path, required=True)
    parser.add_argument("--identity", type=Path, required=True)
    parser.add_argument("host")
    parser.add_argument("remote_dir")
    parser.add_argument("local_dir", type=Path)
    args = parser.parse_args()
    options = SshOptions(known_hosts=args.known_hosts, accept_new_host_keys=False,
                         identity=args.identity, ssh_config=args.ssh_config, connect_timeout_s=10)
    conn = connect(parse_host(args.host), options)
    try:
        print(json.dumps({"files": download_tree(conn, args.remote_dir, args.local_dir)}))
    except HostLost as exc:
        print(json.dumps({"refused": str(exc)}))
    finally:
        conn.close()


if __name__ == "__main__":
    main()
