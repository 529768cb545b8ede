"""Building blocks below the spaces: candidate ops, mixed (supernet) modules, partial-channel and
elastic layers, NNI-style mutables, the converter of user models, and FLOPs/params counters.

``import nasforge.nn as nm`` gives the NNI-style API: ``nm.LayerChoice``, ``nm.ValueChoice``, ``nm.ModelSpace``...
"""

from __future__ import annotations

from nasforge.nn.elastic import ElasticBatchNorm2d, ElasticConv2d, ElasticSequential, WidthChoice
from nasforge.nn.model_space import ModelSpace
from nasforge.nn.mutable_layers import BatchNorm2d, Conv2d, Dropout, Linear
from nasforge.nn.mutables import (
    ChosenInputs,
    Handler,
    InputChoice,
    LayerChoice,
    Mutable,
    Repeat,
    ValueChoice,
    ValueExpr,
    activate,
    collect_choices,
    freeze,
)

__all__ = [
    "BatchNorm2d",
    "ChosenInputs",
    "Conv2d",
    "Dropout",
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
    "ValueExpr",
    "WidthChoice",
    "activate",
    "collect_choices",
    "freeze",
]
