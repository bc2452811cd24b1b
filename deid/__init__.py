"""deid — de-identify medical videos while keeping the motion clinicians need.

The library never imports ray; distributed adapters live in ``ray_jobs/``.
Frames are RGB ``uint8`` arrays of shape (H, W, 3) everywhere in the library.
"""

__version__ = "0.1.0"
