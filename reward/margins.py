"""Rating-dependent margins for the reward-model ranking loss.

Llama 2 (arXiv 2307.09288, section 3.2.2, Table 27) adds a margin ``m(r)`` to the
ranking loss that grows with how much better the annotator rated the chosen answer,
so that clearly separated pairs are pushed further apart. The paper reports two
settings, "small" and "large"; "none" reproduces the plain InstructGPT loss.
These are written out here because no maintained library ships them.
"""

from __future__ import annotations

from types import MappingProxyType

# The 4 preference levels of the Llama 2 annotation protocol, strongest first.
RATINGS: tuple[str, ...] = (
    "significantly_better",
    "better",
    "slightly_better",
    "negligibly_better",
)

# Read-only so that no caller can change the paper's numbers for everyone else.
MARGIN_SCHEMES = MappingProxyType(
    {
        "none": MappingProxyType({r: 0.0 for r in RATINGS}),
        "small": MappingProxyType(
            {
                "significantly_better": 1.0,
                "better": 2.0 / 3.0,
                "slightly_better": 1.0 / 3.0,
                "negligibly_better": 0.0,
            }
        ),
        "large": MappingProxyType(
            {
                "significantly_better": 3.0,
                "better": 2.0,
                "slightly_better": 1.0,
                "negligibly_better": 0.0,
            }
        ),
    }
)


def margin_for(rating: str, scheme: str) -> float:
    """The margin ``m(rating)`` of the given scheme ("none", "small" or "large").

    Raises:
        ValueError: naming the unknown scheme or rating and listing the allowed ones.
    """
    if scheme not in MARGIN_SCHEMES:
        raise ValueError(f"unknown margin scheme {scheme!r}; allowed: {', '.join(MARGIN_SCHEMES)}")
    table = MARGIN_SCHEMES[scheme]
    if rating not in table:
        raise ValueError(f"unknown rating {rating!r}; allowed: {', '.join(RATINGS)}")
    return table[rating]
