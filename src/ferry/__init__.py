"""ferry: a daemonless, podman-compatible container engine that moves running containers."""

__version__ = "0.1.0"
