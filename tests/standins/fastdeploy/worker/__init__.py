"""Stand-in fastdeploy.worker: the runner modules of the selected era live in era_<ERA>/, as plain classes,
so that facts and markers read from their source (as from a real release) see that era's shapes."""
import os

from fastdeploy import ERA

__path__.insert(0, os.path.join(os.path.dirname(__file__), f"era_{ERA}"))
