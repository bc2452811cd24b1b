"""InsightFace models exported in float16 (GPU-minded exports): InsightFace's classes
build float32 blobs unless told the input's type, and such a session refuses them
("expected tensor(float16)"). :func:`accept_half_precision` sets InsightFace's own
``input_dtype`` from the session's input, so its pre- and post-processing run unchanged
(the float16 outputs are read as float32 by the adapters)."""

from __future__ import annotations

from typing import Any

import numpy as np


def accept_half_precision(model: Any) -> bool:
    """``model`` (an InsightFace model zoo object) takes float16 blobs when its first
    input is float16; True when it does."""
    session = getattr(model, "session", None)
    if session is None or session.get_inputs()[0].type != "tensor(float16)":
        return False
    model.input_dtype = np.float16
    return True
