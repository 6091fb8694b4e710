"""Example flows: fetch one run input, or audit many. Deployments point at these files."""
