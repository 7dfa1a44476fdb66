"""Running problems: one entry point for ``ttscale run``, ``sweep``, ``--workers``, ``--ray`` and ``pool score``.

>>> from ttscale.run import Solve, Sweep, Score, execute   # doctest: +SKIP
>>> summary = execute(Solve(task, strategy), store=store, run_id="r1", backend=backend)  # doctest: +SKIP

:func:`execute` takes the work (:class:`Solve` with a strategy, :class:`Sweep` for a replay pool,
:class:`Score` to score a stored pool), where to run it (an :class:`Executor`: one after another,
threads sharing one backend, or Ray actors building their own from :class:`BackendSpec`), and
reports one :class:`Summary` and :class:`Progress` events. Every kind resumes from the store.
"""

from ttscale.run.entry import execute, summarize
from ttscale.run.executor import BackendSpec, Executor
from ttscale.run.summary import Progress, ProgressFn, Summary
from ttscale.run.work import DieOnce, Score, Solve, Sweep, Work

__all__ = ["BackendSpec", "DieOnce", "Executor", "Progress", "ProgressFn", "Score", "Solve", "Summary", "Sweep",
           "Work", "execute", "summarize"]
