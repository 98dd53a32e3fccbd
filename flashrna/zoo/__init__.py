"""Models as the steps see them: model directories (trained or imported), official FlashRNA
checkpoints, ensembles, and Borzoi/Flashzoi behind one interface
(:class:`~flashrna.zoo.interface.TrackModel`) and one option, ``--model``.

- :mod:`flashrna.zoo.interface`: the interface, ``--model``, loading.
- :mod:`flashrna.zoo.borzoi`: Borzoi and Flashzoi through borzoi-pytorch.
- :mod:`flashrna.zoo.official`: the published FlashRNA checkpoints, translated.
- :mod:`flashrna.zoo.unpickle`: reading PyTorch checkpoints without running pickled code.
- :mod:`flashrna.zoo.importer`: ``flashrna import-model``.
"""

from flashrna.zoo.importer import import_model
from flashrna.zoo.interface import (
    TrackModel,
    add_model_arguments,
    flashrna_directory,
    load_track_model,
    load_track_table,
    model_track_table,
    resolve_model,
    track_model_from_args,
    track_table_from_args,
)

__all__ = [
    "TrackModel",
    "add_model_arguments",
    "flashrna_directory",
    "import_model",
    "load_track_model",
    "load_track_table",
    "model_track_table",
    "resolve_model",
    "track_model_from_args",
    "track_table_from_args",
]
