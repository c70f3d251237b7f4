"""The roles without hosts: argument specs refuse bad variables, the shared templates render as rbee.render does.

Each test runs ansible-playbook on this machine (connection local, nothing outside a temp folder
is touched); skipped when ansible-core is not installed in the venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rbee.deploy.ansible_inventory import ansible_inventory, host_plan
from rbee.deploy.probe import parse_probe
from rbee.render import render
from rbee.spec import load_spec

ROOT = Path(__file__).parents[2]
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
placements:
  - {model: m, hosts: [a, b], replicas: 2, slots: 2}
  - {model: n, hosts: [b], device: 'cuda:1'}
"""
PROBE = "os=Linux\narch=x86_64\npython=3.11.2\npython_venv=yes\nsystemd=yes\nprobe=done\n"
GPUS = "gpu=0, NVIDIA L4, 23034, 22000, 8.9\ngpu=1, NVIDIA L4, 23034, 22000, 8.9\n"


def _hosts(tmp_path: Path) -> dict[str, dict[str, Any]]:
    spec = tmp_path / "cluster.yaml"
    spec.write_text(SPEC)
    inventory = ansible_inventory(load_spec(spec), tmp_path)["all"]
    return {name: {**inventory["vars"], **h} for name, h in inventory["children"]["hives"]["hosts"].items()}


def _playbook(tmp_path: Path, plays: list[dict[str, Any]], *extra: str) -> subprocess.CompletedProcess[str]:
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump(plays, sort_keys=False))
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
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
    keys = ("rbee_host", "rbee_backend", "rbee_gpus", "rbee_reserve", "rbee_models", "rbee_placements", "rbee_deploy")
    return {k: v for k, v in _hosts(tmp_path)["b"].items() if k in keys}


def test_a_bad_backend_is_refused_by_the_argument_spec(tmp_path: Path) -> None:
    out = _refused(tmp_path, "rbee_preflight", {**_preflight_vars(tmp_path), "rbee_backend": "cudaa"})
    assert "value of rbee_backend must be one of: auto, cpu, cuda, metal, got: cudaa" in out


def test_a_missing_variable_is_refused(tmp_path: Path) -> None:
    variables = _preflight_vars(tmp_path)
    del variables["rbee_deploy"]
    assert "missing required arguments: rbee_deploy" in _refused(tmp_path, "rbee_preflight", variables)


def test_a_wrong_nested_value_is_refused(tmp_path: Path) -> None:
    variables = _preflight_vars(tmp_path)
    variables["rbee_deploy"] = {**variables["rbee_deploy"], "on_unreachable": "sometimes", "prefx": "/x"}
    out = _refused(tmp_path, "rbee_preflight", variables)
    assert "on_unreachable must be one of: continue, stop, got: sometimes" in out
    assert "prefx" in out


def test_the_runtime_entry_points_check_their_variables(tmp_path: Path) -> None:
    host = _hosts(tmp_path)["a"]
    variables = {k: v for k, v in host.items() if k.startswith("rbee_")}
    variables["rbee_hive"] = {"port": "not-a-port", "max_workers": 4}
    play = _role_play("rbee_runtime", variables)
    del play[0]["roles"]
    play[0]["tasks"] = [{"ansible.builtin.import_role": {"name": "rbee_runtime", "tasks_from": "services"}}]
    run = _playbook(tmp_path, play, "--check")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert '"argument_spec_name": "services"' in out, out[-3000:]
    assert "missing required arguments: rbee_preflight_result" in out
    assert "argument 'port' is of type str found in 'rbee_hive'" in out


def _contexts(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Per template, the context the rbee_runtime role gives it (computed as the role does, in Python)."""
    hosts = _hosts(tmp_path)
    out: dict[str, dict[str, Any]] = {}
    for name, probe in (("a", PROBE), ("b", PROBE + GPUS)):
        data = hosts[name]
        plan = host_plan(data, parse_probe(probe), 0)
        common = {
            **{k: v for k, v in data.items() if k.startswith("rbee_")},
            "python": "/opt/rbee/venv/bin/python",
            "service_user": "rbee",
            "config_dir": "/etc/rbee",
            "workers_dir": "/etc/rbee/workers",
            "data_dir": "/var/lib/rbee",
            "backend": plan["backend"],
            "gpu_indices": plan["gpu_indices"],
            "bind_host": data["ansible_host"],
            "advertise_host": data["ansible_host"],
            "loading_timeout": data["rbee_runtime"]["loading_timeout"],
        }
        hive = {
            "devices": plan["devices"],
            "ctx_size": plan["ctx_size"],
            "model_paths": plan["model_paths"],
            "hive_placements": [],
            "worker_port_first": plan["worker_port_first"],
        }
        out[f"{name}/hive.yaml.j2"] = {**common, **hive}
        for unit in ("rbee-hive.service.j2", "rbee-worker@.service.j2", "rbee-queen.service.j2"):
            out[f"{name}/systemd/{unit}"] = common
        if "rbee_queen" in data:
            out[f"{name}/queen.yaml.j2"] = {**common, "api_keys_env": None, "api_keys_file": "/etc/rbee/api-keys"}
        for worker in plan["workers"]:
            out[f"{name}/worker.env.j2#{worker['name']}"] = {
                **common,
                "worker": worker,
                "model_path": worker["model_path"],
                "ctx_size": worker["ctx_size"],
                "device": worker["device_index"],
                "hive_url": f"http://{data['ansible_host']}:{data['rbee_hive']['port']}",
            }
    return out


@pytest.mark.slow
def test_ansible_renders_the_shared_templates_exactly_as_rbee_render(tmp_path: Path) -> None:
    """Same bytes from the role's template tasks (lstrip_blocks, includes through templates/) and rbee.render."""
    contexts = sorted(_contexts(tmp_path).items())
    assert {c["backend"] for _, c in contexts} == {"cpu", "cuda"}
    (tmp_path / "out").mkdir()
    (tmp_path / "templates").symlink_to(ROOT / "roles" / "rbee_runtime" / "templates")
    (tmp_path / "contexts.json").write_text(json.dumps({"contexts": [c for _, c in contexts]}))
    names = sorted({name for _, context in contexts for name in context})
    task = {
        "name": "render",
        "ansible.builtin.template": {
            "src": "{{ playbook_dir }}/templates/{{ templates[index] }}",
            "dest": f"{tmp_path}/out/{{{{ index }}}}",
            "lstrip_blocks": True,
            "mode": "0644",
        },
        # lazily templated: a template only reads the names its context has
        "vars": {name: f"{{{{ item['{name}'] }}}}" for name in names},
        "loop": "{{ contexts }}",
        "loop_control": {"index_var": "index"},
    }
    play = {
        "name": "render",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {
            "ansible_python_interpreter": sys.executable,
            "templates": [key.split("/", 1)[1].split("#")[0] for key, _ in contexts],
        },
        "vars_files": ["contexts.json"],
        "tasks": [task],
    }
    run = _playbook(tmp_path, [play])
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    for index, (key, context) in enumerate(contexts):
        expected = render(key.split("/", 1)[1].split("#")[0], context)
        assert (tmp_path / "out" / str(index)).read_text() == expected, key


@pytest.mark.slow
@pytest.mark.skipif(not ANSIBLE_LINT.exists(), reason="ansible-lint is not installed in this venv")
def test_ansible_lint_production_profile_passes() -> None:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    run = subprocess.run(
        [str(ANSIBLE_LINT), "--offline"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "Profile 'production' was required, and it passed" in run.stdout + run.stderr
