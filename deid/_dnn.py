"""OpenCV DNN networks, one per input size.

``cv2.dnn`` fixes a network's layer shapes on its first forward pass; a later input of
another size is not always re-shaped and then comes back as garbage (CenterFace, loaded
from ONNX, returned ~150 "faces" a frame on a 256x256 clip after a 426x240 one). Every
backend that runs a ``cv2.dnn`` network on frames of varying size takes its network
from here: one instance per input size, a few sizes kept (least recently used first out).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable


class NetsBySize:
    def __init__(self, load: Callable[[], Any], keep: int = 4, first: Any = None):
        """``first``: a network already loaded (e.g. to check the file when the backend is
        built); it serves the first input size asked for instead of a second load."""
        self._load = load
        self._keep = max(1, int(keep))
        self._nets: "OrderedDict[tuple[int, ...], Any]" = OrderedDict()
        self._first = first

    def get(self, size: tuple[int, ...]) -> Any:
        """The network for inputs of ``size`` (loaded on first use)."""
        key = tuple(int(x) for x in size)
        net = self._nets.pop(key, None)
        if net is None and self._first is not None:
            net, self._first = self._first, None
        elif net is None:
            net = self._load()
            while len(self._nets) >= self._keep:
                self._nets.popitem(last=False)
        self._nets[key] = net
        return net

    def __len__(self) -> int:
        return len(self._nets)
