"""GitOps rollouts: plan (dry run), status, rolling deploys with a health gate and rollback."""
