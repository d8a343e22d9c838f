"""Data for the trainer: corpora, vocabulary, batches and segments, generated copy tasks.

The public API lives here; the submodules split it by concern:

* :mod:`.vocab` -- :class:`Vocabulary` (checkpointable token table);
* :mod:`.corpora` -- :func:`load_corpus`, :class:`Corpus`, :func:`derive_wikitext2_small`,
  :func:`encode_file` (a user's text under a trained model's vocabulary), :func:`corpus_level`;
* :mod:`.download` -- :func:`download_corpus` (sha256-verified, atomic, cached);
* :mod:`.batching` -- :func:`batchify`, :func:`segment_lengths`, :func:`get_segment`;
* :mod:`.copy_task` -- :func:`copy_task_batch` for copy / repeat-copy.

Only :mod:`altgrad_triton.errors` and :mod:`altgrad_triton.names` (which corpora are
character-level) are imported from the rest of the package.
"""

from .batching import Segment, batchify, check_batch_size, get_segment, segment_lengths
from .copy_task import (
    COPY_VOCABULARY,
    CopyTaskBatch,
    CopyToken,
    copy_task_batch,
    copy_task_length,
)
from .corpora import (
    CORPORA,
    SPLITS,
    Corpus,
    corpus_level,
    derive_wikitext2_small,
    encode_file,
    load_corpus,
)
from .download import (
    CACHE_ENV,
    SOURCES,
    CorpusSource,
    RemoteFile,
    download_corpus,
    resolve_cache_dir,
)
from .vocab import EOS, UNK, Vocabulary

__all__ = [
    "CACHE_ENV",
    "CORPORA",
    "COPY_VOCABULARY",
    "EOS",
    "SOURCES",
    "SPLITS",
    "UNK",
    "CopyTaskBatch",
    "CopyToken",
    "Corpus",
    "CorpusSource",
    "RemoteFile",
    "Segment",
    "Vocabulary",
    "batchify",
    "check_batch_size",
    "copy_task_batch",
    "copy_task_length",
    "corpus_level",
    "derive_wikitext2_small",
    "download_corpus",
    "encode_file",
    "get_segment",
    "load_corpus",
    "resolve_cache_dir",
    "segment_lengths",
]
