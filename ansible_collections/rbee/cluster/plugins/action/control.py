"""Action ``rbee.cluster.control``: run one of rbee's control-side helpers on the controller (never on a host)."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.rbee.cluster.plugins.plugin_utils.rbee_control import HELPERS, control_python, run_helper

ARGUMENT_SPEC: dict[str, Any] = {
    "helper": {"type": "str", "required": True, "choices": [h for h in HELPERS if h != "inventory-json"]},
    "data": {"type": "dict", "default": {}},
    "python": {"type": "str", "default": ""},
}


class ActionModule(ActionBase):  # type: ignore[misc]
    """Runs the helper with ``data`` as JSON; ``reply`` is its JSON answer, ``changed`` its ``changed`` key."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            reply, progress = run_helper(control_python(args["python"]), args["helper"], args["data"])
        except AnsibleError as exc:
            return {**result, "failed": True, "msg": str(exc)}
        changed = isinstance(reply, dict) and bool(reply.get("changed", False))
        return {**result, "changed": changed, "reply": reply, "stderr_lines": progress}
