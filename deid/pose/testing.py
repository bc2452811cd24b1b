"""Tiny stand-in ONNX models with the real pose networks' signatures, for tests.

They let the OpenPose and RTMPose backends run end to end (cv2.dnn / onnxruntime loading,
pre-processing, decoding, mapping) without the real weights, which cannot be fetched here.
Each model outputs fixed maps chosen by the test, multiplied by a *content gate*: 0 for a
uniform input (a blank frame), 1 for a frame with contrast, so "blank frame -> nobody"
holds for them as it does for a real model.

Needs the ``onnx`` package (a test dependency), imported when a model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["write_openpose_onnx", "write_rtmpose_onnx"]

_OPSET = 13
_IR_VERSION = 8  # readable by OpenCV 4.x's ONNX importer and by onnxruntime


def _gate_nodes(helper, inp: str, gain: float = 4.0):
    """Nodes computing g = clip(gain * (max(x) - min(x)), 0, 1) as a (1, 1, 1, 1) tensor."""
    from onnx import numpy_helper

    nodes = [
        helper.make_node("ReduceMax", [inp], ["g_max"], keepdims=1),
        helper.make_node("ReduceMin", [inp], ["g_min"], keepdims=1),
        helper.make_node("Sub", ["g_max", "g_min"], ["g_range"]),
        helper.make_node("Mul", ["g_range", "g_gain"], ["g_scaled"]),
        helper.make_node("Min", ["g_scaled", "g_one"], ["gate"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(gain, np.float32).reshape(1, 1, 1, 1), "g_gain"),
        numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "g_one"),
    ]
    return nodes, inits


def _save(model, path: str | Path) -> Path:
    import onnx

    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="deid-tests")
    return _save(model, path)


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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="deid-tests")
    return _save(model, path)
