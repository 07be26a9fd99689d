"""Training objectives, registered by name; the train loop looks them up here."""

from __future__ import annotations

from reprlab.methods.anil import ANIL
from reprlab.methods.arcface import ArcFace
from reprlab.methods.autoencoder import Autoencoder
from reprlab.methods.barlow_twins import BarlowTwins
from reprlab.methods.base import EpisodicMethod, Method, MethodArgs
from reprlab.methods.byol import BYOL
from reprlab.methods.contrastive import Contrastive
from reprlab.methods.dino import DINO
from reprlab.methods.finetune import Finetune
from reprlab.methods.fixmatch import FixMatch
from reprlab.methods.jigsaw import Jigsaw
from reprlab.methods.kmeans import KMeans
from reprlab.methods.mae import MAE
from reprlab.methods.maml import MAML
from reprlab.methods.mean_teacher import MeanTeacher
from reprlab.methods.mixmatch import MixMatch
from reprlab.methods.moco_v2 import MoCoV2
from reprlab.methods.moco_v3 import MoCoV3
from reprlab.methods.multi_similarity import MultiSimilarity
from reprlab.methods.noisy_student import NoisyStudent
from reprlab.methods.pca import PCA
from reprlab.methods.protonet import ProtoNet
from reprlab.methods.proxy_anchor import ProxyAnchor
from reprlab.methods.pseudo_label import PseudoLabel
from reprlab.methods.rotation import Rotation
from reprlab.methods.simclr import SimCLR
from reprlab.methods.simsiam import SimSiam
from reprlab.methods.supcon import SupCon
from reprlab.methods.supervised import Supervised
from reprlab.methods.swav import SwAV
from reprlab.methods.triplet import Triplet
from reprlab.methods.vicreg import VICReg

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "moco_v2": MoCoV2,
    "moco_v3": MoCoV3,
    "byol": BYOL,
    "simsiam": SimSiam,
    "mae": MAE,
    "barlow_twins": BarlowTwins,
    "vicreg": VICReg,
    "dino": DINO,
    "swav": SwAV,
    "rotation": Rotation,
    "jigsaw": Jigsaw,
    "autoencoder": Autoencoder,
    "supervised": Supervised,
    "finetune": Finetune,
    "fixmatch": FixMatch,
    "pseudo_label": PseudoLabel,
    "mean_teacher": MeanTeacher,
    "mixmatch": MixMatch,
    "noisy_student": NoisyStudent,
    "protonet": ProtoNet,
    "maml": MAML,
    "anil": ANIL,
    "contrastive": Contrastive,
    "triplet": Triplet,
    "multi_similarity": MultiSimilarity,
    "supcon": SupCon,
    "arcface": ArcFace,
    "proxy_anchor": ProxyAnchor,
    "pca": PCA,
    "kmeans": KMeans,
}


def method_class(name: str) -> type[Method]:
    """The registered Method class called `name`."""
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; allowed: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "EpisodicMethod", "Method", "MethodArgs", "method_class"]
