"""Tiny random-weight stand-ins for the face models, for tests and the offline demo.

They have the production models' signatures, so they load through the same
code (``SCRFDDetector``, ``ArcFaceRecognizer``, ``FaceAnalyzer``):

- ``scrfd_10g_bnkps.onnx``: input ``input.1`` float[N,3,H,W] (any H, W that are
  multiples of 32; batchable), 9 outputs: scores [N,K,1], box distances
  [N,K,4], landmark offsets [N,K,10] for strides 8, 16, 32 with 2 anchors per
  cell, in the SCRFD order (all scores, all boxes, all landmarks).
- ``arcface.onnx``: input float[N,3,112,112] in (x-127.5)/127.5 (like Arc2Face's
  arcface.onnx), output float[N,512].

A detector with only random weights would find faces nowhere or everywhere.
This one is biased instead: its stride-32 score is a bump peaking at the centre
of the detector input, and its boxes and landmarks are a fixed face layout
(ArcFace template proportions, about 2/3 of the input wide) scaled with the
input size. Small random convolutions add image-dependent wiggle. So on any
image it reports exactly one plausible face near the centre of the (letterboxed)
input, which aligns cleanly; on square images such as generated faces that is
the image centre. Strides 8 and 16 are biased far below any threshold.

The recognizer is a fixed random projection of a centred 7x7 thumbnail of a
random convolution: deterministic, image dependent (similar crops give similar
embeddings), with no notion of identity. Filter thresholds tuned for real
recognizers mean little with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthface.faces.align import ARCFACE_TEMPLATE
from synthface.files import atomic_path

DETECTOR_FILE = "scrfd_10g_bnkps.onnx"
RECOGNIZER_FILE = "arcface.onnx"
STRIDES = (8, 16, 32)
NUM_ANCHORS = 2
OPSET = 13
IR_VERSION = 8  # readable by onnxruntime >= 1.10

# The face layout, as fractions of the detector input (width for x, height for y),
# relative to the anchor at the input centre.
_FACE_WIDTH = 0.66
_BOX = np.array([0.33, 0.36, 0.33, 0.40], np.float32)  # left, top, right, bottom distances
_LANDMARKS = ((ARCFACE_TEMPLATE - np.array([56.0, 60.0], np.float32)) / 112.0 * _FACE_WIDTH).reshape(-1)


def _const(name: str, array) -> "object":
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def build_tiny_detector(seed: int = 0, fixed_batch_1: bool = False):
    """The biased tiny SCRFD-signature detector as an ``onnx.ModelProto``; ``fixed_batch_1``
    exports it like buffalo's det_*.onnx (input [1,3,H,W], outputs [K,C])."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    feat_ch = 4
    inits += [_const("zero_w", np.zeros((1, 3, 1, 1))), _const("one_b", [1.0]), _const("half", [0.5]),
              _const("minus_one", [-1.0])]
    out_shape = (lambda c: [-1, c]) if fixed_batch_1 else (lambda c: [0, -1, c])
    for name, c in (("kps_shape", 10), ("box_shape", 4), ("score_shape", 1)):
        inits.append(helper.make_tensor(name, TensorProto.INT64, [len(out_shape(c))], out_shape(c)))
    outputs = {"score": [], "bbox": [], "kps": []}
    for s in STRIDES:
        p = f"s{s}_"
        # image features at this stride: pooled pixels through a small random conv
        nodes.append(helper.make_node("AveragePool", ["input.1"], [p + "pool"], kernel_shape=[s, s], strides=[s, s]))
        inits += [_const(p + "feat_w", rng.normal(0, 0.5, (feat_ch, 3, 1, 1))), _const(p + "feat_b", np.zeros(feat_ch))]
        nodes.append(helper.make_node("Conv", [p + "pool", p + "feat_w", p + "feat_b"], [p + "feat"]))
        # grid coordinates: a map of ones, cumulated along x and y; their maxima are the grid size
        nodes.append(helper.make_node("Conv", [p + "pool", "zero_w", "one_b"], [p + "ones"]))
        for axis, name in ((3, "x"), (2, "y")):
            inits.append(helper.make_tensor(p + f"axis_{name}", TensorProto.INT64, [], [axis]))
            nodes.append(helper.make_node("CumSum", [p + "ones", p + f"axis_{name}"], [p + f"cum_{name}"]))
            nodes.append(helper.make_node("ReduceMax", [p + f"cum_{name}"], [p + f"size_{name}"], axes=[2, 3], keepdims=1))
            # cells between this anchor and the one at the input centre: (cum - 1) - size / 2
            nodes.append(helper.make_node("Add", [p + f"cum_{name}", "minus_one"], [p + f"idx_{name}"]))
            nodes.append(helper.make_node("Mul", [p + f"size_{name}", "half"], [p + f"mid_{name}"]))
            nodes.append(helper.make_node("Sub", [p + f"idx_{name}", p + f"mid_{name}"], [p + f"d_{name}"]))
            nodes.append(helper.make_node("Mul", [p + f"d_{name}", p + f"d_{name}"], [p + f"d2_{name}"]))
        nodes.append(helper.make_node("Add", [p + "d2_x", p + "d2_y"], [p + "r2"]))
        # score logit: peak - sharpness * r^2 (r in cells) + small image term; a neighbouring cell
        # already scores below 0.2, so exactly one cell fires
        peak = 4.0 if s == 32 else -14.0
        inits += [_const(p + "peak", [peak]), _const(p + "sharp", [-6.0])]
        inits += [_const(p + "score_w", rng.normal(0, 0.05, (NUM_ANCHORS, feat_ch, 1, 1))), _const(p + "score_b", np.zeros(NUM_ANCHORS))]
        nodes.append(helper.make_node("Conv", [p + "feat", p + "score_w", p + "score_b"], [p + "score_img"]))
        nodes.append(helper.make_node("Mul", [p + "r2", p + "sharp"], [p + "score_r"]))
        nodes.append(helper.make_node("Add", [p + "score_r", p + "peak"], [p + "score_base"]))
        nodes.append(helper.make_node("Add", [p + "score_img", p + "score_base"], [p + "logit"]))
        nodes.append(helper.make_node("Sigmoid", [p + "logit"], [p + "prob"]))
        # boxes and landmarks: fixed face layout scaled by the grid size (x by width, y by height)
        for head, per_anchor, base in (("bbox", 4, _BOX), ("kps", 10, _LANDMARKS)):
            channels = NUM_ANCHORS * per_anchor
            is_x = np.array([(k % 2 == 0) if head == "kps" else (k % 2 == 0) for k in range(per_anchor)])
            wx = np.tile(np.where(is_x, base, 0.0), NUM_ANCHORS).reshape(1, channels, 1, 1)
            wy = np.tile(np.where(is_x, 0.0, base), NUM_ANCHORS).reshape(1, channels, 1, 1)
            inits += [_const(p + head + "_wx", wx), _const(p + head + "_wy", wy)]
            inits += [_const(p + head + "_w", rng.normal(0, 0.02, (channels, feat_ch, 1, 1))), _const(p + head + "_b", np.zeros(channels))]
            nodes.append(helper.make_node("Mul", [p + "size_x", p + head + "_wx"], [p + head + "_bx"]))
            nodes.append(helper.make_node("Mul", [p + "size_y", p + head + "_wy"], [p + head + "_by"]))
            nodes.append(helper.make_node("Add", [p + head + "_bx", p + head + "_by"], [p + head + "_base"]))
            nodes.append(helper.make_node("Conv", [p + "feat", p + head + "_w", p + head + "_b"], [p + head + "_img"]))
            nodes.append(helper.make_node("Add", [p + head + "_img", p + head + "_base"], [p + head + "_map"]))
        # [N, A*C, h, w] -> [N, h*w*A, C]: a cell's anchors are consecutive, as in SCRFD
        for head, src, shape in (("score", "prob", "score_shape"), ("bbox", "bbox_map", "box_shape"), ("kps", "kps_map", "kps_shape")):
            nodes.append(helper.make_node("Transpose", [p + src], [p + head + "_t"], perm=[0, 2, 3, 1]))
            out = f"{head}_{s}"
            nodes.append(helper.make_node("Reshape", [p + head + "_t", shape], [out]))
            outputs[head].append(out)

    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1 if fixed_batch_1 else "N", 3, "H", "W"])
    outs = [
        helper.make_tensor_value_info(
            name, TensorProto.FLOAT, ([] if fixed_batch_1 else ["N"]) + [f"K{name.split('_')[1]}", c]
        )
        for head, c in (("score", 1), ("bbox", 4), ("kps", 10))
        for name in outputs[head]
    ]
    graph = helper.make_graph(nodes, "tiny_scrfd", [inp], outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="synthface-tiny")
    model.ir_version = IR_VERSION
    return model


def build_tiny_recognizer(seed: int = 1, dim: int = 512, layout: str = "NCHW", normalise_inside: bool = False):
    """The tiny ArcFace-signature recognizer as an ``onnx.ModelProto``. ``layout='NHWC'`` and
    ``normalise_inside`` (input 0..255, Sub/Mul at the start of the graph, like the shared
    MobileFaceNet) give the variants the loader must tell apart; all compute the same function."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    ch = 8
    feat = ch * 7 * 7
    inits = [
        _const("conv_w", rng.normal(0, 0.3, (ch, 3, 3, 3))),
        _const("conv_b", np.zeros(ch)),
        _const("fc_w", rng.normal(0, 1.0 / np.sqrt(feat), (feat, dim))),
        _const("fc_b", np.zeros(dim)),
    ]
    nodes = []
    x = "input.1"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    if normalise_inside:
        inits += [_const("mean", [127.5]), _const("inv_std", [1 / 127.5])]
        nodes += [helper.make_node("Sub", [x, "mean"], ["centred_px"]), helper.make_node("Mul", ["centred_px", "inv_std"], ["scaled_px"])]
        x = "scaled_px"
    nodes += [
        helper.make_node("Conv", [x, "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["conv"], ["thumb"], kernel_shape=[8, 8], strides=[8, 8]),  # 56 -> 7
        helper.make_node("Flatten", ["thumb"], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat"], ["flat_mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "flat_mean"], ["centred"]),
        helper.make_node("Gemm", ["centred", "fc_w", "fc_b"], ["embedding"]),
    ]
    shape = ["N", 112, 112, 3] if layout == "NHWC" else ["N", 3, 112, 112]
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, shape)
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])
    graph = helper.make_graph(nodes, "tiny_arcface", [inp], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="synthface-tiny")
    model.ir_version = IR_VERSION
    return model


def write_tiny_face_models(directory: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the tiny detector and recognizer into ``directory`` under the production file
    names; returns {"detector": path, "recognizer": path}. Deterministic for a seed."""
    import onnx

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"detector": directory / DETECTOR_FILE, "recognizer": directory / RECOGNIZER_FILE}
    for key, model in (("detector", build_tiny_detector(seed)), ("recognizer", build_tiny_recognizer(seed + 1))):
        onnx.checker.check_model(model, full_check=True)
        with atomic_path(paths[key]) as tmp:
            onnx.save(model, str(tmp))
    return paths
