"""dlib's face-recognition ResNet run by torch: the same weights, the same numbers, ~10x
less CPU than dlib's own forward pass on this machine.

Why: dlib's CPU forward pass takes ~85 ms a face here and holds the GIL, and the
identity model sits on three hot paths — the leak audit of every output (several
embeddings per sampled frame), the swap's identity gate and ``deid evaluate``. torch
runs the same network in ~6 ms a face on one core (``python -m deid.identity.bench``
measures both; ``tests/test_dlib_resnet.py`` checks that both give the same descriptor
to 1e-4, on real and on random chips).

The weights are read from the file ``face_recognition_models`` ships
(``dlib_face_recognition_resnet_model_v1.dat``); nothing is downloaded or converted
ahead of time. Facts about dlib's serialisation used here (dlib's ``serialize.h`` /
``tensor.h`` / ``layers.h``):

- an integer is one byte ``n`` (low nibble: how many bytes follow; bit 7: negative)
  followed by ``n`` little-endian bytes; a string is its length (an integer) and its
  bytes; a tensor (format version 2) is five integers (2, num_samples, k, nr, nc)
  followed by ``num_samples*k*nr*nc`` little-endian IEEE float32;
- every layer writes its name (``con_4``, ``affine_``, ``relu_``, ``max_pool_2``,
  ``avg_pool_2``, ``add_prev_``, ``fc_2``) before its parameters; the network is stored
  input layer first;
- ``con_4``: one parameter tensor (filters ``[n_filters, k, nr, nc]`` then one bias per
  filter), then n_filters, nr, nc, stride_y, stride_x, padding_y, padding_x; ``affine_``
  (batch norm frozen after training): gamma then beta, one per channel;
  ``max_pool_2`` / ``avg_pool_2``: nr, nc, stride_y, stride_x, padding_y, padding_x
  (``nr = 0``: the whole plane); ``fc_2``: n_outputs, n_inputs, then a
  ``[n_inputs, n_outputs]`` tensor (this model has no bias);
- the input layer normalises RGB as ``(x - mean) / 256`` with dlib's means
  (122.782, 117.001, 104.298);
- ``add_prev`` of two tensors of different shapes adds them into the larger shape,
  missing values counting as zero (dlib's ``tt::add``); in this network that happens
  where a strided 3x3 convolution without padding and the 2x2 average pool of the
  block's input disagree by one row / column, and where the block widens its channels.

The network itself (dlib's ``dnn_face_recognition_ex.cpp``): a 7x7/2 convolution,
3x3/2 max pool, then residual blocks (conv-affine-relu-conv-affine, added to the block's
input, relu; a down-sampling block strides its first convolution and adds the 2x2
average pool of its input), global average pool, 256 -> 128 linear. The reader below
does not hard-code it: it follows the layer sequence in the file and refuses one it
cannot follow (:class:`deid.errors.ModelWeightsError`), so a file of another
architecture is never run as if it were this one.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelWeightsError

#: dlib's ``input_rgb_image_sized`` means (R, G, B); inputs are ``(x - mean) / 256``.
INPUT_MEAN = (122.782, 117.001, 104.298)
INPUT_SCALE = 256.0
CHIP = 150

_LAYER_NAMES = ("con_4", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_", "fc_2")
_LAYER_RE = re.compile(b"\x01([\x04-\x0a])(" + b"|".join(n.encode() for n in _LAYER_NAMES) + b")")


@dataclass(frozen=True)
class Layer:
    """One layer read from the file: its dlib name, parameters and integer settings."""

    name: str
    params: np.ndarray | None = None
    ints: tuple[int, ...] = ()


def _unreadable(path: str, what: str) -> ModelWeightsError:
    return ModelWeightsError(
        f"{path}: not a dlib face-recognition ResNet this reader can run ({what}); "
        "use the file face_recognition_models ships, or identity runtime 'dlib'"
    )


class _Reader:
    def __init__(self, data: bytes, path: str):
        self.b, self.path = data, path

    def fail(self, what: str) -> ModelWeightsError:
        return _unreadable(self.path, what)

    def int(self, o: int) -> tuple[int, int]:
        if o >= len(self.b):
            raise self.fail("file ends inside a layer")
        n = self.b[o]
        k = n & 0x0F
        if k > 8 or o + 1 + k > len(self.b):
            raise self.fail(f"bad integer at byte {o}")
        v = int.from_bytes(self.b[o + 1 : o + 1 + k], "little")
        return (-v if n & 0x80 else v), o + 1 + k

    def ints(self, o: int, n: int) -> tuple[tuple[int, ...], int]:
        out = []
        for _ in range(n):
            v, o = self.int(o)
            out.append(v)
        return tuple(out), o

    def tensor(self, o: int) -> tuple[np.ndarray, int]:
        (ver, *dims), o = self.ints(o, 5)
        if ver != 2 or any(d < 0 for d in dims):
            raise self.fail(f"tensor header {ver, *dims} at byte {o}")
        n = int(np.prod(dims))
        if o + 4 * n > len(self.b):
            raise self.fail("file ends inside a tensor")
        return np.frombuffer(self.b, "<f4", n, o).astype(np.float32), o + 4 * n


def read_layers(path: str | Path) -> list[Layer]:
    """The layers of a dlib DNN file, input first, with their parameters.

    Layers are found by their serialised names; each match must start after the end of
    the previous layer's parameters (a name cannot be read out of a weight tensor)."""
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ModelWeightsError(f"{path}: cannot read dlib model ({e.strerror or e})") from None
    r = _Reader(data, path)
    out: list[Layer] = []
    pos = 0
    for m in _LAYER_RE.finditer(data):
        name = m.group(2).decode()
        if m.start() < pos or data[m.start() + 1] != len(name):
            continue
        o = m.end()
        if name == "con_4":
            p, o = r.tensor(o)
            ints, o = r.ints(o, 7)
            out.append(Layer(name, p, ints))
        elif name == "affine_":
            p, o = r.tensor(o)
            out.append(Layer(name, p))
        elif name == "fc_2":
            ints, o = r.ints(o, 2)
            p, o = r.tensor(o)
            out.append(Layer(name, p, ints))
        elif name in ("max_pool_2", "avg_pool_2"):
            ints, o = r.ints(o, 6)
            out.append(Layer(name, None, ints))
        else:
            out.append(Layer(name))
        pos = o
    if not out:
        raise r.fail("no dlib layers found")
    return out


@dataclass(frozen=True)
class _Op:
    kind: str  # conv | relu | maxpool | avgpool | shortcut_pool | add | fc
    weight: object = None
    bias: object = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    size: tuple[int, int] = (0, 0)
    block_start: bool = False


def compile_ops(layers: Sequence[Layer], path: str = "dlib model") -> tuple[list[_Op], int]:
    """Turn the layer list into operations (each convolution with its frozen batch norm
    folded in) and check that they chain: channel counts, the residual pattern and a
    final linear layer. Returns the operations and the descriptor size."""
    import torch

    ops: list[_Op] = []
    ch = 3
    prev = None
    after_add = False
    block_in_ch = None
    i = 0
    while i < len(layers):
        L = layers[i]
        if L.name == "con_4":
            nf, kh, kw, sy, sx, py, px = L.ints
            if nf <= 0 or kh <= 0 or kw <= 0 or L.params is None:
                raise _unreadable(path, f"convolution {i} has shape {L.ints}")
            cin, rem = divmod(L.params.size - nf, nf * kh * kw)
            if rem or cin != ch:
                raise _unreadable(path, f"convolution {i} takes {cin} channels where {ch} arrive")
            if i + 1 >= len(layers) or layers[i + 1].name != "affine_" or layers[i + 1].params.size != 2 * nf:
                raise _unreadable(path, f"convolution {i} is not followed by its affine (batch-norm) layer")
            w = L.params[: nf * cin * kh * kw].reshape(nf, cin, kh, kw)
            b = L.params[nf * cin * kh * kw :]
            g, beta = layers[i + 1].params[:nf], layers[i + 1].params[nf:]
            start = prev == "max_pool_2" or (prev == "relu_" and after_add)
            if start:
                block_in_ch = ch
            ops.append(_Op("conv", torch.from_numpy(np.ascontiguousarray(w * g[:, None, None, None])),
                           torch.from_numpy(np.ascontiguousarray(b * g + beta)), (sy, sx), (py, px), block_start=start))
            ch = nf
            prev = "affine_"
            i += 2
            continue
        if L.name == "affine_":
            raise _unreadable(path, f"affine layer {i} without a convolution before it")
        if L.name == "relu_":
            ops.append(_Op("relu"))
            after_add = prev == "add_prev_"
        elif L.name in ("max_pool_2", "avg_pool_2"):
            nr, nc, sy, sx, py, px = L.ints
            if L.name == "max_pool_2":
                ops.append(_Op("maxpool", stride=(sy, sx), padding=(py, px), size=(nr, nc)))
            elif nr == 0 and nc == 0:
                ops.append(_Op("avgpool"))  # the whole plane
            elif prev == "affine_" and i + 1 < len(layers) and layers[i + 1].name == "add_prev_":
                ops.append(_Op("shortcut_pool", stride=(sy, sx), padding=(py, px), size=(nr, nc)))
            else:
                raise _unreadable(path, f"average pool {i} outside the pattern this reader follows")
        elif L.name == "add_prev_":
            if block_in_ch is None:
                raise _unreadable(path, f"residual addition {i} without a block input")
            ops.append(_Op("add"))
            ch = max(ch, block_in_ch)
        elif L.name == "fc_2":
            nout, nin = L.ints
            if L.params is None or L.params.size != nin * nout or nin != ch:
                raise _unreadable(path, f"linear layer {i}: {nin} -> {nout} after {ch} channels")
            ops.append(_Op("fc", torch.from_numpy(np.ascontiguousarray(L.params.reshape(nin, nout)))))
            ch = nout
        prev = L.name
        i += 1
    if not ops or ops[-1].kind != "fc" or not any(o.kind == "avgpool" for o in ops):
        raise _unreadable(path, "no global pool and final linear layer")
    return ops, ch


class DlibResNet:
    """dlib's face-recognition network on torch: ``__call__(chips) -> (N, 128) float32``
    for 150 x 150 RGB uint8 chips aligned as dlib's ``get_face_chip`` makes them."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.ops, self.dim = _compiled(self.path, *_stamp(self.path))

    def __call__(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if not len(chips):
            return np.zeros((0, self.dim), np.float32)
        x = np.stack([np.asarray(c, np.uint8) for c in chips])
        if x.ndim != 4 or x.shape[3] != 3:
            raise ValueError(f"DlibResNet: chips must be (H, W, 3) RGB uint8, got {x.shape[1:]}")
        with torch.inference_mode():
            t = torch.from_numpy(x).permute(0, 3, 1, 2).float()
            t = (t - torch.tensor(INPUT_MEAN).view(1, 3, 1, 1)) / INPUT_SCALE
            block_in = shortcut = None
            for op in self.ops:
                k = op.kind
                if k == "conv":
                    if op.block_start:
                        block_in, shortcut = t, None
                    t = F.conv2d(t, op.weight, op.bias, stride=op.stride, padding=op.padding)
                elif k == "relu":
                    t = F.relu(t)
                elif k == "maxpool":
                    t = F.max_pool2d(t, op.size, op.stride, op.padding)
                elif k == "shortcut_pool":
                    shortcut = F.avg_pool2d(block_in, op.size, op.stride, op.padding)
                elif k == "avgpool":
                    t = t.mean(dim=(2, 3), keepdim=True)
                elif k == "add":
                    s = block_in if shortcut is None else shortcut
                    if s.shape == t.shape:
                        t = t + s
                    else:  # dlib's add of differently shaped tensors: zero where one is missing
                        shape = [max(a, b) for a, b in zip(t.shape, s.shape)]
                        out = t.new_zeros(shape)
                        out[:, : t.shape[1], : t.shape[2], : t.shape[3]] += t
                        out[:, : s.shape[1], : s.shape[2], : s.shape[3]] += s
                        t = out
                elif k == "fc":
                    t = t.flatten(1) @ op.weight
            return t.numpy().astype(np.float32, copy=False)


def _stamp(path: str) -> tuple[int, int]:
    """(size, mtime in ns) of the file: a changed file is parsed again. An unreadable one
    gets no stamp; :func:`read_layers` then raises the error that names it (an error is
    never cached)."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=2)
def _compiled(path: str, size: int, mtime_ns: int) -> tuple[list[_Op], int]:
    """The parsed, compiled network of one file version, shared by every
    :class:`DlibResNet` on it (inference only reads the tensors): the leak audit's and
    the evaluation's encoders, and ``deid doctor``'s checks, parse the file once."""
    return compile_ops(read_layers(path), path)
