"""opsbot's own exceptions, one small tree.

OpsbotError
 ├── ConfigError        the configuration file or environment is invalid
 ├── UsageError         a command's arguments are wrong (shown to the user as one line)
 └── ExecutorError      an endpoint could not be reached or refused us
      └── HostKeyError  an SSH host key did not match known_hosts
"""


class OpsbotError(Exception):
    """Base class of every error opsbot raises on purpose."""


class ConfigError(OpsbotError):
    """The configuration is invalid; the message names the field and where it is."""


class UsageError(OpsbotError):
    """A command was called wrongly; the message is a one-line explanation for the chat."""


class ExecutorError(OpsbotError):
    """An endpoint could not be reached, or refused the connection."""


class HostKeyError(ExecutorError):
    """The SSH host key was unknown or did not match known_hosts."""
