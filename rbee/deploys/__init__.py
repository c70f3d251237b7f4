"""pyinfra deploys of rbee, importable ``@deploy`` functions (pyinfra's "packaging deploys").

One module per concern, composed by ``site.site()``: preflight, runtime, engine, install, models, services,
record, health. The decisions (what to build, which problems stop a host) live in ``rbee.deploy`` and are
unit-tested; these modules only turn them into pyinfra operations. The files pyinfra runs (inventory, site,
snapshot, rollback) are in ``rbee.deploys.entry``; a checkout also has ``inventory/inventory.py`` and
``deploys/site.py``.
"""
