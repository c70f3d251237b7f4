"""Control-machine side of the deploy: what the pyinfra deploys in ``rbee/deploys/`` prepare locally."""
