"""The collection's roles without hosts: argument specs refuse bad variables; ansible-lint passes.

Each test runs ansible-playbook on this machine (connection local, nothing outside a temp folder
is touched) with the collection of this checkout (``ansible_collections/rbee/cluster``); skipped
when ansible-core is not installed in the venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rbee.deploy.ansible_inventory import ansible_inventory
from rbee.spec import load_spec

ROOT = Path(__file__).parents[2]
COLLECTION = ROOT / "ansible_collections" / "rbee" / "cluster"
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = BIN / "ansible-playbook"
ANSIBLE_LINT = BIN / "ansible-lint"

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core is not installed in this venv")

SPEC = """cluster: t
queen: {host: a, api_keys: {env: KEYS}}
hosts:
  - {name: a, address: 10.0.0.1}
  - {name: b, address: 10.0.0.2, backend: cuda, gpus: [0, 1]}
models:
  - {id: m, source: 'file:///m.gguf', sha256: 74a4da8c9fdbcd15bd1f6d01d621410d31c6fc00986f5eb687824e7b93d7a9db}
  - {id: n, source: 'file:///n.gguf', context: 4096}
  - {id: e, source: 'file:///e.gguf', embedding: true}
placements:
  - {model: m, hosts: [a, b], replicas: 2, slots: 2}
  - {model: n, hosts: [b], device: 'cuda:1'}
  - {model: e, hosts: [a]}
"""


def _hosts(tmp_path: Path) -> dict[str, dict[str, Any]]:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC)
    inventory = ansible_inventory(load_spec(spec), spec)["all"]
    return {name: {**inventory["vars"], **h} for name, h in inventory["children"]["hives"]["hosts"].items()}


def _playbook(tmp_path: Path, plays: list[dict[str, Any]], *extra: str) -> subprocess.CompletedProcess[str]:
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump(plays, sort_keys=False))
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    command = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(book), *extra]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def _role_play(role: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": "role",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable, **variables},
            "roles": [{"role": role}],
        }
    ]


def _refused(tmp_path: Path, role: str, variables: dict[str, Any]) -> str:
    run = _playbook(tmp_path, _role_play(role, variables), "--check")
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "Validating arguments against arg spec" in out, out[-3000:]
    return out


def _preflight_vars(tmp_path: Path) -> dict[str, Any]:
    keys = ("rbee_host", "rbee_backend", "rbee_gpus", "rbee_reserve", "rbee_models", "rbee_placements", "rbee_deploy",
            "rbee_spec_file")  # fmt: skip
    return {k: v for k, v in _hosts(tmp_path)["b"].items() if k in keys}


def test_a_bad_backend_is_refused_by_the_argument_spec(tmp_path: Path) -> None:
    out = _refused(tmp_path, "rbee.cluster.rbee_preflight", {**_preflight_vars(tmp_path), "rbee_backend": "cudaa"})
    assert "value of rbee_backend must be one of: auto, cpu, cuda, metal, got: cudaa" in out


def test_a_missing_variable_is_refused(tmp_path: Path) -> None:
    variables = _preflight_vars(tmp_path)
    del variables["rbee_deploy"]
    assert "missing required arguments: rbee_deploy" in _refused(tmp_path, "rbee.cluster.rbee_preflight", variables)


def test_a_wrong_nested_value_is_refused(tmp_path: Path) -> None:
    variables = _preflight_vars(tmp_path)
    variables["rbee_deploy"] = {**variables["rbee_deploy"], "on_unreachable": "sometimes", "prefx": "/x"}
    out = _refused(tmp_path, "rbee.cluster.rbee_preflight", variables)
    assert "on_unreachable must be one of: continue, stop, got: sometimes" in out
    assert "prefx" in out


def test_the_runtime_entry_points_check_their_variables(tmp_path: Path) -> None:
    host = _hosts(tmp_path)["a"]
    variables = {k: v for k, v in host.items() if k.startswith("rbee_")}
    variables["rbee_hive"] = {"port": "not-a-port", "max_workers": 4}
    play = _role_play("rbee.cluster.rbee_runtime", variables)
    del play[0]["roles"]
    services = {"name": "rbee.cluster.rbee_runtime", "tasks_from": "services"}
    play[0]["tasks"] = [{"ansible.builtin.import_role": services}]
    run = _playbook(tmp_path, play, "--check")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert '"argument_spec_name": "services"' in out, out[-3000:]
    assert "missing required arguments: rbee_preflight_result" in out
    assert "argument 'port' is of type str found in 'rbee_hive'" in out


@pytest.mark.slow
@pytest.mark.skipif(not ANSIBLE_LINT.exists(), reason="ansible-lint is not installed in this venv")
def test_ansible_lint_production_profile_passes_on_the_repository_playbooks() -> None:
    """The checkout's own playbooks (``playbooks/site.yml``); the collection is linted in test_collection.py."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    run = subprocess.run(
        [str(ANSIBLE_LINT), "--offline"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "Profile 'production' was required, and it passed" in run.stdout + run.stderr


def test_every_entry_point_takes_every_deploy_setting() -> None:
    """The inventory gives ``rbee_deploy`` all of the spec's ``deploy`` settings: each role entry point that
    checks ``rbee_deploy`` must know each one (a new spec field missing from one entry point fails there)."""
    from rbee.spec.models import DeploySpec

    wanted = set(DeploySpec.model_fields)
    found = sorted(COLLECTION.glob("roles/*/meta/argument_specs.yml"))
    assert len(found) == 4
    for specs in found:
        for entry, spec in yaml.safe_load(specs.read_text())["argument_specs"].items():
            deploy = spec.get("options", {}).get("rbee_deploy")
            if deploy is not None:
                assert set(deploy["options"]) == wanted, f"{specs.parent.parent.name} {entry}"


ENTRY_POINTS = [
    ("rbee.cluster.rbee_preflight", "main"), ("rbee.cluster.rbee_runtime", "install"),
    ("rbee.cluster.rbee_engine", "main"), ("rbee.cluster.rbee_models", "main"),
    ("rbee.cluster.rbee_runtime", "services"), ("rbee.cluster.rbee_runtime", "main"),
]  # fmt: skip


@pytest.mark.parametrize(("role", "entry"), ENTRY_POINTS)
def test_each_entry_point_accepts_the_inventory_of_a_real_spec(tmp_path: Path, role: str, entry: str) -> None:
    """Every host's inventory variables (and a preflight result) pass each entry point's argument spec.

    Only the validation runs (``--tags`` matching nothing: the validation task is tagged ``always``).
    """
    for name, host in _hosts(tmp_path).items():
        variables = {k: v for k, v in host.items() if k.startswith("rbee_")}
        variables["rbee_preflight_result"] = {}
        play = _role_play(role, variables)
        del play[0]["roles"]
        play[0]["tasks"] = [{"ansible.builtin.import_role": {"name": role, "tasks_from": entry}}]
        run = _playbook(tmp_path, play, "--tags", "rbee-validation-only")
        out = run.stdout + run.stderr
        assert run.returncode == 0, f"{name}: {out[-3000:]}"
        assert "Validating arguments against arg spec" in out, out[-3000:]


def test_every_entry_point_takes_every_model_field() -> None:
    """``rbee_models`` items are the spec's models (``ModelSpec``): each entry point must know every field."""
    from rbee.spec.models import ModelSpec

    wanted = set(ModelSpec.model_fields)
    for specs in sorted(COLLECTION.glob("roles/*/meta/argument_specs.yml")):
        for entry, spec in yaml.safe_load(specs.read_text())["argument_specs"].items():
            models = spec.get("options", {}).get("rbee_models")
            if models is not None:
                assert set(models["options"]) == wanted, f"{specs.parent.parent.name} {entry}"
