"""Platform adapters, apart from the study stages.

Kubernetes schemas and validation (`k8s`), Katib experiments (`katib`), KServe deployment (`deploy`)
and pipeline submission (`submit`). The study stages never import these at module level, so the core
stays importable without a cluster client.
"""
