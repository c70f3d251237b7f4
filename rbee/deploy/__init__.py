"""Control-machine side of the deploy: what the pyinfra deploys in ``deploys/`` prepare locally."""
