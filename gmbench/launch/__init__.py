"""Fan-out: a suite's runs on many processes, GPUs or SLURM tasks, gathered in one folder.

The package sits between the tables and :mod:`gmbench.runner`: the runner drains its queue
with :mod:`.queue` and :mod:`.claims` (per-run claims with a heartbeat, instead of a lock
on the folder), and what needs the runner's ``execute`` or ``run_suite`` gets it handed in.
:mod:`.workers` (``--workers N``) starts child ``gmbench run`` processes, :mod:`.slurm`
(``--launcher slurm``) submits submitit tasks, :mod:`.status` reads a folder, :mod:`.cost`
estimates ``--dry-run``'s GPU-hours.
"""
