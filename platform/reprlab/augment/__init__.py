"""Augmentation: view policies by name, each one pydantic model of its job fields and its batched
transform (augment/policies.py), built from the ops in augment/ops.py, augment/spatial.py and
augment/randaugment.py, plus the batch mixers of augment/mix.py.

`POLICIES` is the one registry; `AugmentConfig`, the type of a job's `data.augment`, is the
union of its policies chosen by the `policy` key (simclr when absent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Discriminator, Tag, TypeAdapter

from reprlab.augment.base import ViewPolicy
from reprlab.augment.policies import (
    BYOLPolicy,
    MAEPolicy,
    RandAugmentPolicy,
    SimCLRPolicy,
    StrongPolicy,
    ThreeAugmentPolicy,
    WeakPolicy,
)

DEFAULT_POLICY = "simclr"

POLICIES: dict[str, type[ViewPolicy]] = {
    policy.model_fields["policy"].default: policy
    for policy in (
        SimCLRPolicy,
        BYOLPolicy,
        MAEPolicy,
        RandAugmentPolicy,
        ThreeAugmentPolicy,
        WeakPolicy,
        StrongPolicy,
    )
}


def _policy_tag(value: Any) -> str:
    """The policy name a `data.augment` dict or policy carries; the default when it has none."""
    if isinstance(value, dict):
        return value.get("policy", DEFAULT_POLICY)
    return getattr(value, "policy", DEFAULT_POLICY)


def _known_policy(value: Any) -> Any:
    """Reject an unknown policy name with the allowed names, before the union tries a member."""
    if isinstance(value, dict) and _policy_tag(value) not in POLICIES:
        allowed = ", ".join(repr(name) for name in POLICIES)
        raise ValueError(f"policy: must be one of {allowed}, got {_policy_tag(value)!r}")
    return value


AugmentConfig = Annotated[
    Union[tuple(Annotated[policy, Tag(name)] for name, policy in POLICIES.items())],  # noqa: UP007 (built from the registry)
    Discriminator(_policy_tag),
    BeforeValidator(_known_policy),
]
"""A job's `data.augment`: the policy of POLICIES named by `policy` (default simclr), with that
policy's own fields; all searchable by Ray Tune."""

_AUGMENT = TypeAdapter(AugmentConfig)


def build_policy(augment: ViewPolicy | Mapping[str, Any], image_size: int) -> ViewPolicy:
    """The policy of a job's `data.augment` (a policy, or its fields as a dict, e.g. a Ray Tune
    trial's), validated and making views of image_size x image_size."""
    policy = augment if isinstance(augment, ViewPolicy) else _AUGMENT.validate_python(dict(augment))
    return policy.at_size(image_size)


__all__ = [
    "POLICIES",
    "AugmentConfig",
    "BYOLPolicy",
    "MAEPolicy",
    "RandAugmentPolicy",
    "SimCLRPolicy",
    "StrongPolicy",
    "ThreeAugmentPolicy",
    "ViewPolicy",
    "WeakPolicy",
    "build_policy",
]
