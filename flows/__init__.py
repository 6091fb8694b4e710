"""Command lines of the two flows, which live in ``parallel_tasks.flows``; deployments point at these files."""
