"""Stage 1 of the run pipeline: seeds and endpoint commands, decided without a network."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from testbed.net.shaping import Backends
from testbed.runner import endpoint_seed, expected_carrying_subflows, plan_run
from testbed.spec import ExperimentSpec, load_spec

EXPERIMENTS = Path(__file__).parents[3] / "experiments"
BACKENDS = Backends(rate="htb", loss="nft", delay="userspace")


def test_endpoint_seeds_are_stable_distinct_per_role_and_follow_the_run_seed() -> None:
    assert endpoint_seed(1, "client") == endpoint_seed(1, "client")
    assert endpoint_seed(1, "client") != endpoint_seed(1, "server")
    assert endpoint_seed(1, "client") != endpoint_seed(2, "client")
    # pinned: a stored result's seeds must keep replaying the same run
    assert endpoint_seed(1, "client") == 0x99F3A3759843B246
    assert 0 <= endpoint_seed(2**64 - 1, "server") < 2**64


def _option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_a_python_endpoint_is_started_with_its_derived_rng_seed(tmp_path: Path) -> None:
    spec = load_spec(EXPERIMENTS / "two_path_python.toml")
    plan = plan_run(spec, tmp_path, BACKENDS)
    assert plan.client.stack == "python" and plan.server.stack == "kernel"
    assert _option(plan.client.command, "--rng-seed") == str(endpoint_seed(spec.seed, "client"))
    assert plan.client.record.seed == endpoint_seed(spec.seed, "client")
    assert "--rng-seed" not in plan.server.command and plan.server.record.seed is None
    # the payload seed goes to the sender (an upload here: the client)
    assert _option(plan.client.command, "--seed") == str(spec.seed)
    assert plan.client.record.payload_seed == spec.seed and plan.server.record.payload_seed is None
    assert _option(plan.client.command, "--timeseries") == str(tmp_path / "client.samples.csv")


def test_another_run_seed_changes_every_python_seed(tmp_path: Path) -> None:
    spec = load_spec(EXPERIMENTS / "two_path_python.toml")
    other = plan_run(dataclasses.replace(spec, seed=spec.seed + 1), tmp_path, BACKENDS)
    same = plan_run(spec, tmp_path, BACKENDS)
    assert other.client.record.seed != same.client.record.seed
    assert same.client.command == plan_run(spec, tmp_path, BACKENDS).client.command


def _with_backups(spec: ExperimentSpec, backups: list[str]) -> ExperimentSpec:
    """The spec with its (python) client marking these addresses backup."""
    endpoints = tuple(dataclasses.replace(e, stack_config={"backup_addresses": backups})
                      if e.role == "client" else e for e in spec.endpoints)
    return dataclasses.replace(spec, endpoints=endpoints)


def test_a_backup_address_is_not_expected_to_carry_data(tmp_path: Path) -> None:
    """The survey's python backup cell read subflow-rejected for a clean, idle backup subflow."""
    spec = load_spec(EXPERIMENTS / "two_path_python.toml")
    addresses = plan_run(spec, tmp_path, BACKENDS).client.addresses
    assert len({device for _address, device in addresses}) == 2
    assert expected_carrying_subflows(spec, addresses) == 2
    assert expected_carrying_subflows(_with_backups(spec, [addresses[1][0]]), addresses) == 1
    assert expected_carrying_subflows(_with_backups(spec, ["192.0.2.9"]), addresses) == 2
    assert expected_carrying_subflows(_with_backups(spec, [a for a, _d in addresses]), addresses) == 1
