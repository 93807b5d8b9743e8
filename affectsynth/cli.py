"""Command-line interface (thin: every stage lives in its own module).

    affectsynth example OUT.png                 write the bundled example photo
    affectsynth fit IMAGE -o fit.json [--overlay overlay.png] [--model model.npz] [--all-faces]

Exit codes: 0 ok; 1 internal error (a bug); 2 bad input (file, image, argument) or no usable
face; 3 partial success in batch mode. Errors are one line on stderr; set AFFECTSYNTH_DEBUG=1
for a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from .errors import AffectsynthError, InputError

log = logging.getLogger("affectsynth")


def _load_model(path: Path | None):
    from .model import FaceModel
    from .model import load_default_model

    return load_default_model() if path is None else FaceModel.load(path)


def cmd_example(args: argparse.Namespace) -> int:
    from skimage import data

    from .io import check_output_path, save_image

    save_image(check_output_path(args.output), data.astronaut())
    print(f"wrote {args.output} (scikit-image's astronaut photo, NASA, public domain)")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from .draw import draw_fit_overlay
    from .fit import fit_record
    from .io import check_output_path, load_image, save_image, save_json
    from .pipeline import FaceFitter

    outputs = [check_output_path(p, args.image) for p in (args.output, args.overlay) if p is not None]
    if len(set(outputs)) != len(outputs):
        raise InputError("--output and --overlay name the same file")
    image = load_image(args.image)
    model = _load_model(args.model)
    fitter = FaceFitter(model, detector=args.detector)
    try:
        result = fitter(image, all_faces=args.all_faces, name=str(args.image))
    finally:
        fitter.close()
    fit, landmarks = result.fit, result.landmarks
    faces = []
    for i in range(fit.batch_size):
        record = fit_record(fit, i, model)
        record["box_px"] = landmarks.box[i].tolist()
        record["detection_score"] = float(landmarks.score[i])
        faces.append(record)
    doc = {"image": str(args.image), "image_size": list(image.shape[:2]), "detector": args.detector,
           "faces_found": result.faces_found, **faces[0]}
    if args.all_faces:
        doc["faces"] = faces
    # Everything is computed before anything is written, so a failure leaves no output behind.
    overlay = draw_fit_overlay(image, model, fit, landmarks) if args.overlay else None
    save_json(args.output, doc)
    if overlay is not None:
        save_image(args.overlay, overlay)
    for i, rec in enumerate(faces):
        status = "reliable" if rec["reliable"] else "UNRELIABLE: " + "; ".join(rec["unreliable_reasons"])
        print(f"face {i}: yaw {rec['pose_deg']['yaw']:.1f} pitch {rec['pose_deg']['pitch']:.1f} "
              f"roll {rec['pose_deg']['roll']:.1f} deg, error {rec['error']['mean_px']:.2f} px "
              f"(NME {rec['error']['nme']:.4f}), {status}")
    print(f"wrote {args.output}" + (f" and {args.overlay}" if args.overlay else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="affectsynth", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("example", help="write the bundled example photo (scikit-image's astronaut)")
    p.add_argument("output", type=Path)
    p.set_defaults(func=cmd_example)

    p = sub.add_parser("fit", help="detect the face and fit the 3D face model to it")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="fit result, JSON")
    p.add_argument("--overlay", type=Path, help="also draw the fitted mesh over the photo (PNG/JPEG)")
    p.add_argument("--model", type=Path, help="a model .npz (default: the embedded FACS model)")
    p.add_argument("--detector", choices=("mediapipe", "dlib"), default="mediapipe")
    p.add_argument("--all-faces", action="store_true",
                   help="fit every face (default: the single dominant face; similar-sized faces are an error)")
    p.set_defaults(func=cmd_fit)
    return ap


def _quiet_native_logs() -> None:
    """Send native libraries' log lines (MediaPipe/TFLite/absl write straight to file
    descriptor 2) to /dev/null, keeping Python's own stderr on the real terminal, so an error
    is the one line we print."""
    sys.stderr.flush()
    real = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(real, "w", buffering=1, closefd=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    own_process = argv is None  # the console script, not a caller's interpreter
    if own_process and not (args.verbose or os.environ.get("AFFECTSYNTH_DEBUG")):
        _quiet_native_logs()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="affectsynth: %(message)s")
    try:
        return args.func(args)
    except AffectsynthError as e:
        print(f"affectsynth: error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("affectsynth: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line, unless the user asks for the traceback
        if os.environ.get("AFFECTSYNTH_DEBUG"):
            traceback.print_exc()
        print(f"affectsynth: internal error: {type(e).__name__}: {e} (set AFFECTSYNTH_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
