"""Models as the steps see them: FlashRNA model directories, ensembles, and the Borzoi/Flashzoi
baselines behind one interface (:class:`~flashrna.zoo.interface.TrackModel`).

- :mod:`flashrna.zoo.interface`: the interface, the ``--model`` options, loading.
- :mod:`flashrna.zoo.borzoi`: Borzoi and Flashzoi through borzoi-pytorch.
"""

from flashrna.zoo.interface import (
    TrackModel,
    add_model_arguments,
    load_track_models,
    model_track_table,
)

__all__ = ["TrackModel", "add_model_arguments", "load_track_models", "model_track_table"]
