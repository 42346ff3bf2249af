"""The boundary around user-stored functions: bubblewrap, seccomp, an unprivileged uid, rlimits.

``Sandbox.run`` executes one function call in a fresh sandbox and returns a typed
``SandboxResult``; ``Sandbox.check`` runs the start-up canary and fails closed.
"""

from cloudagents.sandbox.launcher import BwrapLauncher, UidPool, processes_of_uid
from cloudagents.sandbox.results import ErrorKind, LimitName, SandboxLimits, SandboxResult
from cloudagents.sandbox.sandbox import Sandbox, SandboxStatus, shared_sandbox

__all__ = [
    "BwrapLauncher",
    "ErrorKind",
    "LimitName",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "SandboxStatus",
    "UidPool",
    "processes_of_uid",
    "shared_sandbox",
]
