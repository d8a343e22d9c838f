"""The method, with plain arguments: the carried state, the recurrent cells (``QRNN``,
``LSTM``), the language model, the synthesizers, the synthetic-gradient boundary, one TBPTT
segment step, the schedule (epoch -> lr, mode, restart), NT-ASGD's trigger and the cache
pointer. Nothing here reads a recipe or a file: ``run.build`` turns a recipe into these."""
