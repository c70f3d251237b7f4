"""Documentation of the action ``rbee.cluster.control`` (it runs on the controller: plugins/action/control.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: control
short_description: Run one of rbee's control-side helpers on the controller
description:
  - Runs C(python -m rbee.cli.ansible_cmd HELPER) on the control machine with O(data) as JSON on stdin and
    returns its JSON answer as RV(reply). The roles of rbee.cluster use it for what only rbee knows, the
    probe script, each host's plan, the wheelhouses, the engine wheels, the models, the release record and
    the health gate.
  - Needs rbee on the control machine, not in Ansible's own Python; it runs O(python), else C(RBEE_CONTROL_PYTHON),
    else Ansible's Python when it imports rbee, else the Python of C(rbee) on PATH. Without rbee it fails with
    one line naming C(pip install rbee).
  - Never runs on a managed host; C(delegate_to) is not needed.
options:
  helper:
    description: The helper to run.
    type: str
    required: true
    choices: [probe, models, plan, wheelhouse, wheelsync, engine, record, health]
  data:
    description: The helper's input (see C(python -m rbee.cli.ansible_cmd HELPER --help)).
    type: dict
    default: {}
  python:
    description: A Python that imports rbee; empty picks one as described above.
    type: str
    default: ""
attributes:
  check_mode:
    support: full
    description: The helpers change nothing on the hosts (models and wheels are cached on the controller).
author: rbee
"""

EXAMPLES = r"""
- name: Get the preflight probe script
  rbee.cluster.control:
    helper: probe
  run_once: true
  register: probe
"""

RETURN = r"""
reply:
  description: The helper's JSON answer.
  returned: success
  type: raw
stderr_lines:
  description: The helper's progress lines.
  returned: success
  type: list
  elements: str
"""
