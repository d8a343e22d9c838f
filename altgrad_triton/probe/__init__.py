"""The truncation probe: what truncated BPTT discards at a segment boundary and how much of it
a synthesizer recovers, on any RNN (``truncation``), on a trained run (``on_run``), for
synthesizers fitted afresh on a run (``fit``) and once per epoch while training
(``per_epoch``, a hook the trainer is handed). Imports core and run."""
