"""pyinfra deploys of rbee: ``pyinfra inventory/inventory.py deploys/site.py``.

One module per concern, composed by ``site.py``: preflight, engine, runtime, models,
services, health. The decisions (what to build, which problems stop a host) live in
``rbee.deploy`` and are unit-tested; these modules only turn them into pyinfra operations.
"""
