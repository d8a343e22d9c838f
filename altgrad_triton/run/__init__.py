"""Running the method: the builders (the one reader of a recipe's keys), the trainer loop,
evaluation, metrics, checkpoints, the run folder and its lock, distributed setup, loading a
trained run (``load_run``), the kernel guard's bookkeeping and the stored tuning winners that
training applies. Imports core, config, data and kernels; nothing above it."""
