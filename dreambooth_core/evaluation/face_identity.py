"""Face identity: whether the person in the generated images is still the person in the photos.

DINO and CLIP-I reward copying the photos' backgrounds and poses and miss a face drifting to
another person's; a face-recognition embedding measures who it is (as WithAnyone and ID-Sim do).
The face in each image is found with the detector that crops the photos (photos/faces.py), cut
square and embedded by ArcFace; the score is the mean cosine of each generated face with every
photo's face (metrics.subject_fidelity on these embeddings), and the share of generated images
with no face is reported beside it (a model that stopped drawing faces is not rewarded).

The model: InsightFace's ArcFace ResNet-50 trained on WebFace600K (`w600k_r50`, 166 MB, 512-d
embeddings), the recogniser of its `buffalo_l` pack and the one face tools (FaceFusion, ComfyUI
nodes) use, run with onnxruntime, the runtime it is published for; fetched from the hub once and
cached like the base model. InsightFace licenses its trained models for non-commercial research
use. Without 5-point alignment (the Haar detector gives a box, not landmarks) the cosines are a
little lower than InsightFace's own pipeline gives; every step is measured the same way, which is
what choosing a step needs. `tiny` builds a small random ONNX model of the same interface offline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dreambooth_core.evaluation.metrics import MetricValue, subject_fidelity
from dreambooth_core.model.cache import build_once
from dreambooth_core.model.hub import download_hub_snapshot
from dreambooth_core.photos.faces import find_faces

FACE_REPO, FACE_FILE = "facefusion/models-3.0.0", "arcface_w600k_r50.onnx"
FACE_SIDE = 112  # ArcFace's input: an RGB face, 112 px square, scaled to [-1, 1]
TINY_FACE_MODEL, TINY_FACE_FILE = "tiny-arcface-v1", "tiny_arcface.onnx"
_TINY_POOL, _TINY_WIDTH, _SEED = 8, 32, 0


@dataclass(frozen=True)
class IdentityScore:
    similarity: MetricValue | None  # None when no generated image shows a face
    no_face: float  # the share of generated images without a face


class FaceEmbedder:
    """ArcFace (or the tiny stand-in) in onnxruntime: 112 px face crops -> (n, width) embeddings."""

    def __init__(self, model_file: Path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, faces: list[Image.Image]) -> torch.Tensor:
        pixels = np.stack([np.asarray(face.convert("RGB"), dtype=np.float32) for face in faces])
        blob = ((pixels - 127.5) / 127.5).transpose(0, 3, 1, 2)  # NHWC -> NCHW, as InsightFace feeds it
        return torch.from_numpy(self.session.run(None, {self.input: np.ascontiguousarray(blob)})[0]).float()


def face_crop(image: Image.Image) -> Image.Image | None:
    """The largest face, cut square around its box and resized for ArcFace; None without one."""
    boxes = find_faces(image)
    if not boxes:
        return None
    left, top, right, bottom = boxes[0]
    side = max(right - left, bottom - top)
    x, y = (left + right - side) // 2, (top + bottom - side) // 2
    return image.convert("RGB").crop((x, y, x + side, y + side)).resize((FACE_SIDE, FACE_SIDE),
                                                                        Image.Resampling.BICUBIC)


def identity_score(generated: list[torch.Tensor | None], photos: torch.Tensor) -> IdentityScore:
    """`generated`: each generated image's face embedding (None: no face); `photos`: (m, width)."""
    faces = [e for e in generated if e is not None]
    no_face = 1.0 - len(faces) / len(generated) if generated else 1.0
    return IdentityScore(subject_fidelity(torch.stack(faces), photos) if faces else None, no_face)


def face_identity(embed: FaceEmbedder, generated: list[Image.Image],
                  photos: list[Image.Image]) -> IdentityScore | None:
    """The identity score of `generated` against `photos`; None when no photo shows a face."""
    photo_faces = [face for face in map(face_crop, photos) if face is not None]
    if not photo_faces:
        return None
    crops = [face_crop(image) for image in generated]
    found = [face for face in crops if face is not None]
    embedded = iter(embed(found)) if found else iter(())
    per_image = [next(embedded) if face is not None else None for face in crops]
    return identity_score(per_image, embed(photo_faces))


def fetch_face_model(spec: str, cache_dir: Path, token: str | None = None,
                     log: logging.Logger = logging.getLogger("dreambooth")) -> Path:
    """The face-recognition model's .onnx file: `hub` for ArcFace, `tiny` for a small random one."""
    if spec == "tiny":
        folder, _ = build_once(Path(cache_dir) / TINY_FACE_MODEL, build_tiny_face_model)
        return folder / TINY_FACE_FILE
    folder = download_hub_snapshot(FACE_REPO, Path(cache_dir) / "hub", [FACE_FILE], token=token, log=log)
    return folder / FACE_FILE


def build_tiny_face_model(folder: Path) -> None:
    """ArcFace's interface (N x 3 x 112 x 112 in, N x width out) on a random pooled projection."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(_SEED).standard_normal((3 * (FACE_SIDE // _TINY_POOL) ** 2, _TINY_WIDTH))
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[_TINY_POOL] * 2,
                          strides=[_TINY_POOL] * 2),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "weight"], ["embedding"])],
        "tiny_arcface",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, FACE_SIDE, FACE_SIDE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", _TINY_WIDTH])],
        [numpy_helper.from_array(weight.astype(np.float32), "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what every onnxruntime since 1.10 reads
    onnx.save(model, str(folder / TINY_FACE_FILE))
