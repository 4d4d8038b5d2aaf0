"""Compute slots: a per-host scheduler of job paglets (docs/compute-slots.md).

- `paglets.services.compute.slots`: the pure admission logic (`SlotTable`);
- `paglets.services.compute.contract`: ``compute-slots.v1`` and its records;
- `paglets.services.compute.service`: the scheduler's resident service;
- `paglets.services.compute.hooks`: what the host does for it (process ends, limits);
- `paglets.services.compute.job`: `ComputeJob`, the base class of job paglets;
- `paglets.services.compute.usage`: sampling a job's process tree and temp bytes;
- `paglets.services.compute.placement`: where a job should run (tags, room now);
- `paglets.services.compute.group`: `JobGroup`, the result collector of a group of jobs;
- `paglets.services.compute.explain`, `paglets.services.compute.whyview`: the words
  of refusals and of ``why``.
"""
