"""Building blocks below the spaces: candidate ops, mixed (supernet) modules, partial-channel and
elastic layers, NNI-style mutables, the converter of user models, and FLOPs/params counters.

``import nasforge.nn as nm`` gives the NNI-style API: ``nm.LayerChoice``, ``nm.ValueChoice``, ``nm.ModelSpace``...
"""

from __future__ import annotations

from nasforge.nn.elastic import ElasticBatchNorm2d, ElasticConv2d, ElasticSequential, WidthChoice
from nasforge.nn.model_space import ModelSpace
from nasforge.nn.mutables import (
    BatchNorm2d,
    Conv2d,
    Handler,
    InputChoice,
    LayerChoice,
    Linear,
    Mutable,
    Repeat,
    ValueChoice,
    activate,
    collect_choices,
    freeze,
)

__all__ = [
    "BatchNorm2d",
    "Conv2d",
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticSequential",
    "Handler",
    "InputChoice",
    "LayerChoice",
    "Linear",
    "ModelSpace",
    "Mutable",
    "Repeat",
    "ValueChoice",
    "WidthChoice",
    "activate",
    "collect_choices",
    "freeze",
]
