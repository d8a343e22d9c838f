"""Autotuning: time every registered kernel's candidate configs, keep the winners per device.

The kernels declare their candidate launch configs in ``kernels.tuning`` (``register``);
a launcher asks ``tuning.pick(kernel, key, ...)`` which config to use, and a forced choice
(``set_override``) wins over ``@triton.autotune``. This package

1. derives the launch shapes a recipe implies (:func:`shapes_from_recipe`, :func:`recipe_jobs`)
   or takes them by hand (:func:`parse_shape_spec`);
2. learns each launch's exact override key by *probing* its launcher on ``meta`` tensors:
   ``tuning.pick`` is wrapped for the call so that it records ``(kernel, key)`` and stops
   the launch before anything runs (:func:`probe_key`). The key is therefore the one the
   launcher computes in training, not a copy of its rule;
3. sweeps the candidates on the present GPU (:func:`sweep`): for each, ``set_override``,
   one call to compile it (a failure -- compile error, out of resources -- is recorded and
   skipped), then ``triton.testing.do_bench`` quantiles (median, p20, p80);
4. stores the fastest per key in ``<cache dir>/winners.json`` (:func:`save_winners`), tagged
   with the device name, compute capability and Triton version, and
   :func:`apply_stored_winners` forces them back in a later process -- only for the same
   device name, capability *and* Triton version, and only if the config is still one of the
   kernel's current candidates for that device (they depend on its shared memory).

The submodules split the work:

* :mod:`.jobs` -- :class:`Job`, the per-family jobs and :func:`parse_shape_spec`
  (:class:`RecipeShapes`, :func:`shapes_from_recipe` and :func:`recipe_vocabulary` are the
  builders', ``run.shapes``);
* :mod:`.sweeping` -- :func:`probe_key`, :func:`job_candidates`, :func:`sweep` and
  :func:`tune_all`;
* :mod:`.results` -- what a sweep found (:class:`Trial`, :class:`SweepResult`);
* ``run.winners`` -- the cache dir, ``winners.json`` (:class:`Winner`) and
  :func:`apply_stored_winners`, which training reads (re-exported here);
* :mod:`.tables` -- the rich tables of a sweep;
* :mod:`.warmup` -- compiles a sweep's kernels on every core before it times them
  (``--jobs``);
* :mod:`.configcheck` -- ``--check-configs``: every candidate of each supported
  architecture compiled for it, no GPU;
* :mod:`.fitrecord` -- the check's results recorded per Triton version, which CI reads.
"""

from ..run.shapes import RecipeShapes, recipe_vocabulary, shapes_from_recipe
from ..run.winners import (
    CACHE_ENV,
    FORMAT,
    DeviceId,
    Winner,
    apply_stored_winners,
    cache_dir,
    load_winners,
    present_device,
    save_winners,
    winners_path,
)
from .jobs import (
    DTYPES,
    FAMILY_KERNELS,
    RUN_DTYPES,
    Job,
    authors_scan_jobs,
    dtype_name,
    elementwise_jobs,
    fo_pool_jobs,
    linear_ce_jobs,
    lstm_jobs,
    parse_shape_spec,
    recipe_jobs,
    sg_loss_jobs,
)
from .results import SweepResult, Trial
from .sweeping import (
    QUICK_CANDIDATES,
    QUICK_EVAL_CANDIDATES,
    gpu_timer,
    job_candidates,
    probe_key,
    sweep,
    tune_all,
    unique_jobs,
    winners_from,
)

__all__ = [
    "CACHE_ENV",
    "DTYPES",
    "FAMILY_KERNELS",
    "FORMAT",
    "QUICK_CANDIDATES",
    "QUICK_EVAL_CANDIDATES",
    "RUN_DTYPES",
    "DeviceId",
    "Job",
    "RecipeShapes",
    "SweepResult",
    "Trial",
    "Winner",
    "apply_stored_winners",
    "cache_dir",
    "dtype_name",
    "authors_scan_jobs",
    "elementwise_jobs",
    "fo_pool_jobs",
    "linear_ce_jobs",
    "gpu_timer",
    "job_candidates",
    "load_winners",
    "lstm_jobs",
    "parse_shape_spec",
    "present_device",
    "probe_key",
    "recipe_jobs",
    "recipe_vocabulary",
    "save_winners",
    "sg_loss_jobs",
    "shapes_from_recipe",
    "sweep",
    "tune_all",
    "unique_jobs",
    "winners_from",
    "winners_path",
]
