"""The Hydra glue: config schemas, composition into typed configs, the job, sweeps and error reporting.

The core (``train``) knows nothing of Hydra; everything Hydra-specific lives here.
"""
