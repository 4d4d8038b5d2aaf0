"""Status and exit-reason enums shared by every layer."""

from __future__ import annotations

from enum import StrEnum


class PagletStatus(StrEnum):
    """Where a paglet is in its life on one host."""

    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"
    CRASHED = "crashed"
    DISPOSED = "disposed"
    MOVED = "moved"
    IN_DOUBT = "in_doubt"
    INACTIVE = "inactive"
    RESTARTING = "restarting"
    FAILED = "failed"


class HostStatus(StrEnum):
    """Where a host is in its life."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ExitReason(StrEnum):
    """Why a paglet's process ended."""

    DISPOSED = "disposed"
    EXCEPTION = "exception"
    EXIT_CODE = "exit_code"
    SIGNAL = "signal"
    MEMORY_LIMIT = "memory_limit"
    HUNG = "hung"
    HOST_STOPPED = "host_stopped"
    START_FAILED = "start_failed"
    MOVED = "moved"
    IN_DOUBT = "in_doubt"
    DEACTIVATED = "deactivated"
