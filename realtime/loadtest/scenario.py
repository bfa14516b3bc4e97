"""How a scenario plugs into ``realtime loadtest``: a :class:`Scenario` class and its worker role.

A scenario is one module of this package holding a subclass of
:class:`Scenario`, listed in :data:`realtime.loadtest.registry.SCENARIOS` (name -> ``module:Class``). Its
two halves run in different processes:

* the **controller** half (:meth:`Scenario.drive`) runs in the ``realtime
  loadtest`` process: it may open a few clients of its own (a publisher), asks
  the workers to act through :class:`realtime.loadtest.workers.Pool`, and
  returns a :class:`Outcome`;
* the **worker** half (:meth:`Scenario.role`, a :class:`Role`) runs in each of
  the ``--procs`` worker processes, with the clients of its share
  (:class:`realtime.loadtest.context.WorkerContext`), and answers the
  controller's requests in :meth:`Role.handle`.

Both halves count into a :class:`realtime.loadtest.stats.Stats`; the runner
merges them for the live line, the summary table and ``--json``.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .context import WorkerContext
    from .run import Run


@dataclass
class Outcome:
    """What :meth:`Scenario.drive` measured, beyond the merged stats."""

    #: Seconds of the measured part of the run (the contract's ``elapsed_s``).
    elapsed_s: float
    #: Deliveries per second; None: delivered / elapsed_s.
    deliveries_per_s: float | None = None
    #: Seconds over which the connects happened (for connects/s); None: no connect figure.
    connect_s: float | None = None
    #: Scenario-specific figures (the contract's ``extra``).
    extra: dict[str, Any] = field(default_factory=dict)


class Role(ABC):
    """A scenario's part in one worker process: its clients, driven by the controller's requests."""

    @abstractmethod
    async def handle(self, kind: str, arg: Any) -> Any:
        """Answer one request (``kind`` and ``arg`` as the controller sent them); the value goes back
        pickled. Raise to make the controller's request fail with the error's text."""

    async def close(self) -> None:
        """The run is over: close every client (called once, before the process exits)."""
        return None


class Scenario(ABC):
    """One kind of load: its flags, its worker role, and how the controller drives it."""

    #: The subcommand name and its one-line help.
    name: ClassVar[str]
    help: ClassVar[str]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the scenario's flags (the common ones are already there)."""
        return None

    @classmethod
    def check(cls, args: argparse.Namespace) -> str | None:
        """A usage error in ``args`` (exit 2), or None."""
        return None

    @classmethod
    @abstractmethod
    def clients(cls, args: argparse.Namespace) -> int:
        """How many clients the workers run in all; the runner splits them over ``--procs``."""

    @classmethod
    @abstractmethod
    def role(cls, ctx: WorkerContext) -> Role:
        """Make this scenario's role in a worker process (called there, once)."""

    @abstractmethod
    async def drive(self, run: Run) -> Outcome:
        """Run the scenario from the controller until done or ``run.deadline``."""
