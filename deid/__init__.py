"""deid — de-identify medical videos while keeping the motion clinicians need.

The library never imports ray; distributed adapters live in ``ray_jobs/``.
Frames are RGB ``uint8`` arrays of shape (H, W, 3) everywhere in the library.
"""

import os as _os
import warnings as _warnings

__version__ = "0.1.0"

# Quiet third-party start-up chatter (MediaPipe/TFLite glog lines, a pkg_resources
# deprecation notice from face_recognition_models); real errors still surface.
_os.environ.setdefault("GLOG_minloglevel", "2")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
