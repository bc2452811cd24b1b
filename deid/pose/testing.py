"""Tiny stand-in ONNX models with the real pose networks' signatures, for tests.

They let the OpenPose and RTMPose backends run end to end (cv2.dnn / onnxruntime loading,
pre-processing, decoding, mapping) without the real weights, which cannot be fetched here.
Each model outputs fixed maps chosen by the test, multiplied by a *content gate*: 0 for a
blank frame (even after the backend pads or letterboxes it), 1 for a textured one, so
"blank frame -> nobody" holds for them as it does for a real model.

Needs the ``onnx`` package (a test dependency), imported when a model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..testing import ONNX_OPSET, save_onnx

__all__ = ["write_openpose_onnx", "write_rtmpose_onnx", "write_yolox_onnx", "write_yolox_raw_onnx", "openpose_maps"]


def _gate_nodes(helper, inp: str, threshold: float = 0.05, gain: float = 10.0):
    """Nodes computing a content gate g in [0, 1] as a (1, 1, 1, 1) tensor:
    g = min(relu(gain * (mean |x[..., 1:] - x[..., :-1]| - threshold)), 1).

    The mean absolute horizontal difference is ~0 for a uniform frame even after a backend
    pads it (a crop border is one edge among H x W pixels: ~0.01), and > 1 for a textured
    frame, so a blank frame makes the stand-in model answer "nobody" as a real one would."""
    from onnx import numpy_helper

    big = np.iinfo(np.int64).max
    nodes = [
        helper.make_node("Slice", [inp, "g_s1", "g_e1", "g_ax"], ["g_right"]),
        helper.make_node("Slice", [inp, "g_s0", "g_e0", "g_ax"], ["g_left"]),
        helper.make_node("Sub", ["g_right", "g_left"], ["g_diff"]),
        helper.make_node("Abs", ["g_diff"], ["g_abs"]),
        helper.make_node("ReduceMean", ["g_abs"], ["g_mean"], keepdims=1),
        helper.make_node("Sub", ["g_mean", "g_thr"], ["g_excess"]),
        helper.make_node("Mul", ["g_excess", "g_gain"], ["g_scaled"]),
        helper.make_node("Relu", ["g_scaled"], ["g_pos"]),
        helper.make_node("Min", ["g_pos", "g_one"], ["gate"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "g_s1"),
        numpy_helper.from_array(np.array([big], np.int64), "g_e1"),
        numpy_helper.from_array(np.array([0], np.int64), "g_s0"),
        numpy_helper.from_array(np.array([-1], np.int64), "g_e0"),
        numpy_helper.from_array(np.array([3], np.int64), "g_ax"),
        numpy_helper.from_array(np.array(threshold, np.float32).reshape(1, 1, 1, 1), "g_thr"),
        numpy_helper.from_array(np.array(gain, np.float32).reshape(1, 1, 1, 1), "g_gain"),
        numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "g_one"),
    ]
    return nodes, inits


def write_openpose_onnx(path: str | Path, maps: np.ndarray, gate: bool = True) -> Path:
    """An "OpenPose" whose output is ``maps`` ((C, h, w): 57 or 78 channels), for an input
    of exactly (1, 3, 8h, 8w) — the backend's network input size must match."""
    from onnx import TensorProto, helper, numpy_helper

    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (C, h, w), got {maps.shape}")
    C, h, w = maps.shape
    H, W = h * 8, w * 8
    inits = [numpy_helper.from_array(maps[None], "maps")]
    if gate:
        nodes, g_inits = _gate_nodes(helper, "image")
        nodes.append(helper.make_node("Mul", ["maps", "gate"], ["net_output"]))
        inits += g_inits
    else:
        # keep the input connected: out = maps + 0 * mean(x)
        nodes = [
            helper.make_node("ReduceMean", ["image"], ["m"], keepdims=1),
            helper.make_node("Mul", ["m", "zero"], ["z"]),
            helper.make_node("Add", ["maps", "z"], ["net_output"]),
        ]
        inits.append(numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), "zero"))
    graph = helper.make_graph(
        nodes,
        "tiny_openpose",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("net_output", TensorProto.FLOAT, [1, C, h, w])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="deid-tests")
    return save_onnx(model, path)


def write_rtmpose_onnx(
    path: str | Path,
    simcc_x: np.ndarray,
    simcc_y: np.ndarray,
    input_size: Sequence[int] = (192, 256),
    gate: bool = True,
) -> Path:
    """An "RTMPose" with the real export's signature: input ``input`` (1, 3, H, W), outputs
    ``simcc_x`` (1, K, 2W) and ``simcc_y`` (1, K, 2H) (SimCC split ratio 2.0)."""
    from onnx import TensorProto, helper, numpy_helper

    w, h = int(input_size[0]), int(input_size[1])
    sx = np.asarray(simcc_x, np.float32)
    sy = np.asarray(simcc_y, np.float32)
    if sx.ndim == 2:
        sx, sy = sx[None], sy[None]
    K = sx.shape[1]
    if sx.shape != (1, K, 2 * w) or sy.shape != (1, K, 2 * h):
        raise ValueError(f"simcc_x must be (1, K, {2 * w}) and simcc_y (1, K, {2 * h}); got {sx.shape}, {sy.shape}")
    inits = [numpy_helper.from_array(sx, "cx"), numpy_helper.from_array(sy, "cy")]
    if gate:
        nodes, g_inits = _gate_nodes(helper, "input")
        inits += g_inits
        nodes += [
            helper.make_node("Reshape", ["gate", "shape3"], ["gate3"]),
            helper.make_node("Mul", ["cx", "gate3"], ["simcc_x"]),
            helper.make_node("Mul", ["cy", "gate3"], ["simcc_y"]),
        ]
        inits.append(numpy_helper.from_array(np.array([1, 1, 1], np.int64), "shape3"))
    else:
        nodes = [
            helper.make_node("Identity", ["cx"], ["simcc_x"]),
            helper.make_node("Identity", ["cy"], ["simcc_y"]),
            helper.make_node("ReduceMean", ["input"], ["unused"], keepdims=1),
        ]
    graph = helper.make_graph(
        nodes,
        "tiny_rtmpose",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])],
        [
            helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, K, 2 * w]),
            helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, K, 2 * h]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="deid-tests")
    return save_onnx(model, path)


def write_yolox_onnx(path: str | Path, dets: np.ndarray, input_size: Sequence[int] = (640, 640), gate: bool = True) -> Path:
    """A "YOLOX" person detector exported with its NMS (rtmlib's (1, N, 5) output format:
    x1, y1, x2, y2, score in the letterboxed ``input_size`` input), returning ``dets``."""
    from onnx import TensorProto, helper, numpy_helper

    d = np.asarray(dets, np.float32).reshape(1, -1, 5)
    h, w = int(input_size[0]), int(input_size[1])
    inits = [numpy_helper.from_array(d, "dets")]
    if gate:
        nodes, g_inits = _gate_nodes(helper, "images")
        inits += g_inits + [numpy_helper.from_array(np.array([1, 1, 1], np.int64), "shape3")]
        nodes += [
            helper.make_node("Reshape", ["gate", "shape3"], ["gate3"]),
            helper.make_node("Mul", ["dets", "gate3"], ["out"]),
        ]
    else:
        nodes = [helper.make_node("Identity", ["dets"], ["out"])]
    graph = helper.make_graph(
        nodes,
        "tiny_yolox",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(d.shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="deid-tests")
    return save_onnx(model, path)


def write_yolox_raw_onnx(path: str | Path, objects: Sequence[tuple[int, int, int, float, float, int]],
                         size: int = 640, classes: int = 80) -> Path:
    """A "YOLOX" exported without NMS (mmdet's raw head): output (1, anchors, 5 + classes),
    one row per anchor of strides 8, 16 and 32 (x, y offsets in cells, log w, log h,
    objectness, class scores). ``objects``: (stride, grid x, grid y, width in cells, height
    in cells, class id); such an object decodes to the box centred at (grid + 0.5) * stride
    of size (w, h) * stride in the ``size`` x ``size`` letterboxed input."""
    from onnx import TensorProto, helper, numpy_helper

    n = sum((size // s) ** 2 for s in (8, 16, 32))
    out = np.zeros((1, n, 5 + classes), np.float32)
    out[..., 2:4] = -10.0
    base = {8: 0, 16: (size // 8) ** 2, 32: (size // 8) ** 2 + (size // 16) ** 2}
    for s, gx, gy, w, h, c in objects:
        i = base[s] + gy * (size // s) + gx
        out[0, i, :5] = [0.5, 0.5, np.log(w), np.log(h), 0.95]
        out[0, i, 5 + c] = 0.95
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
         helper.make_node("Mul", ["m", "zero"], ["z"]),
         helper.make_node("Add", ["raw", "z"], ["output"])],
        "tiny_yolox_raw",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(out.shape))],
        [numpy_helper.from_array(out, "raw"), numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="deid-tests")
    return save_onnx(model, path)


def openpose_maps(people, layout, shape: tuple[int, int], sigma: float = 1.0, limb_width: float = 1.0) -> np.ndarray:
    """Ground-truth-style OpenPose output maps (C, h, w) for known people.

    ``people``: one dict per person, part index (the layout's order) -> (x, y) in map
    cells. Heatmaps are Gaussians (``sigma`` cells) per part, background = 1 - max of
    them; each limb's PAF is its unit vector within ``limb_width`` cells of the segment,
    averaged where two limbs overlap (as in the OpenPose training labels)."""
    h, w = int(shape[0]), int(shape[1])
    J = layout.num_parts
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    hm = np.zeros((J + 1, h, w), np.float32)
    paf = np.zeros((2 * len(layout.pairs), h, w), np.float32)
    cnt = np.zeros((len(layout.pairs), h, w), np.float32)
    for person in people:
        for j, (cx, cy) in person.items():
            hm[j] = np.maximum(hm[j], np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * sigma**2)))
        for k, ((a, b), (chx, chy)) in enumerate(zip(layout.pairs, layout.paf)):
            if a not in person or b not in person:
                continue
            pa, pb = np.asarray(person[a], np.float32), np.asarray(person[b], np.float32)
            v = pb - pa
            length = float(np.linalg.norm(v))
            if length < 1e-6:
                continue
            u = v / length
            rx, ry = gx - pa[0], gy - pa[1]
            along = rx * u[0] + ry * u[1]
            across = np.abs(rx * u[1] - ry * u[0])
            m = (along >= -limb_width) & (along <= length + limb_width) & (across <= limb_width)
            paf[chx][m] += u[0]
            paf[chy][m] += u[1]
            cnt[k][m] += 1
    for k, (chx, chy) in enumerate(layout.paf):
        nz = cnt[k] > 0
        paf[chx][nz] /= cnt[k][nz]
        paf[chy][nz] /= cnt[k][nz]
    hm[J] = 1.0 - hm[:J].max(axis=0)
    return np.concatenate([hm, paf], axis=0)
