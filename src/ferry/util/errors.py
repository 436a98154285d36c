"""The one error root. Every failure a user can meet is a FerryError with a
one-line message and, where there is one, a hint saying what to do."""

from __future__ import annotations


class FerryError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(FerryError):
    """The command line itself is wrong (unknown command, bad flag, bad value)."""


class PermissionDenied(FerryError):
    """The caller lacks a privilege ferry needs, usually root."""


class NotFound(FerryError):
    """A named thing (container, image, file, tool) does not exist."""


class Conflict(FerryError):
    """The request clashes with existing state (name in use, port taken)."""


class DamagedRecord(FerryError):
    """A container's record cannot be read (a crash or a hand edit left it odd);
    `rm -f` still removes the container it names, by its ID."""

    def __init__(self, container_id: str, name: str, why: object):
        super().__init__(f"the record of container {name!r} is damaged: {why}",
                         hint=f"remove it with 'ferry rm -f {container_id[:12]}'")
        self.container_id = container_id
        self.name = name


class ContainerRunning(Conflict):
    """The container runs, and what was asked needs it stopped (`rm` without -f)."""


class InUse(Conflict):
    """Containers use the image, volume or network (`rmi`, `volume rm`, `network rm`
    without -f): podman's verbs exit 2 for it."""


class ExecImpossible(Conflict):
    """`exec` into a container that is not running (stopped, created, paused):
    podman's exec exits 255 for it, its -d 125."""


class CommandNotFound(NotFound):
    """The command given to `exec` does not exist in the container (shell's 127)."""


class CommandNotExecutable(FerryError):
    """The command given to `exec` exists but cannot be run (shell's 126)."""


class RuntimeRefused(FerryError):
    """The OCI runtime could not set the container up as asked (a limit this
    host does not allow): podman's "OCI runtime" failures, exit 126."""


class Several(FerryError):
    """A command acted on several names and more than one failed: each error keeps
    its own line, and the first one decides the exit code."""

    def __init__(self, errors: list[FerryError]):
        super().__init__("; ".join(e.message for e in errors))
        self.errors = list(errors)


class Incompatible(FerryError):
    """This host cannot do what was asked (missing kernel feature, old CRIU)."""


class Refused(FerryError):
    """Another host's agent refused a request; `check` names the check that
    refused a migration (arch, kernel, cpu, name, ip, image, memory, disk...)."""

    def __init__(self, message: str, hint: str | None = None, check: str | None = None):
        super().__init__(message, hint)
        self.check = check


class BadArchive(FerryError):
    """A checkpoint or image archive is truncated, tampered with or hostile."""


class DiskFull(FerryError):
    """A write failed for want of space (ENOSPC) or quota (EDQUOT). The
    message names what could not be written, the hint the filesystem to free
    space on (util.fs.no_space builds both)."""


class ToolError(FerryError):
    """An external tool (runc, CRIU, ip, nft...) failed.

    `output_tail` holds the last lines it printed and `log_path` the log that
    was kept for the user, if any.
    """

    def __init__(self, desc: str, code: int | None, output_tail: str = "",
                 hint: str | None = None, log_path: str | None = None):
        detail = f": {output_tail}" if output_tail else ""
        status = "timed out" if code is None else f"failed (exit {code})"
        super().__init__(f"{desc} {status}{detail}", hint)
        self.desc = desc
        self.code = code
        self.output_tail = output_tail
        self.log_path = log_path


def from_os_error(error: OSError, what: str, kind: type[FerryError] = FerryError,
                  hint: str | None = None) -> FerryError:
    """The one line for an OSError that ended `what` ("cannot read X"): "WHAT: REASON",
    in the system's words ("Permission denied"). `kind` is FerryError or a subclass
    taking (message, hint). Raise it `from None`: the OSError's traceback adds nothing."""
    return kind(f"{what}: {error.strerror or error}", hint=hint)
