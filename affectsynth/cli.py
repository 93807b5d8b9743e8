"""Command-line interface (thin: every stage lives in its own module).

    affectsynth example OUT.png                 write the bundled example photo
    affectsynth fit IMAGE -o fit.json [--overlay overlay.png] [--model model.npz] [--all-faces]
    affectsynth render IMAGE (--expression NAME [--intensity I] | --va V,A | --au 12:0.8,6:0.6)
                       [-o OUT.png] [--json meta.json] [--seed N] [--model model.npz] [--all-faces]

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


def _target(args: argparse.Namespace):
    """The ExpressionCode asked for on the command line, and a file-name tag for it."""
    import torch

    from .affect.bank import VABank, target_from_va
    from .affect.targets import parse_au, parse_expression, parse_va

    generator = None if args.seed is None else torch.Generator().manual_seed(args.seed)
    if args.intensity is not None and args.expression is None:
        raise InputError("--intensity goes with --expression")
    if args.expression is not None:
        intensity = 1.0 if args.intensity is None else args.intensity
        code = parse_expression(args.expression, intensity, generator=generator)
        tag = "+".join(sorted(code.soft_label)) + ("" if intensity == 1.0 else f"_{intensity:.2f}")
    elif args.va is not None:
        valence, arousal = parse_va(args.va)
        code = target_from_va(valence, arousal, VABank.default(), generator=generator)
        tag = f"va{valence:+.2f}{arousal:+.2f}"
    else:
        code = parse_au(args.au)
        tag = "au" + "_".join(f"{k.removeprefix('AU')}-{v:.2f}" for k, v in sorted(code.au.items()))
    return code, tag


def cmd_render(args: argparse.Namespace) -> int:
    from .fit import fit_record
    from .io import check_output_path, load_image, save_image, save_json
    from .pipeline import Synthesizer

    target, tag = _target(args)
    output = args.output or args.image.with_name(f"{args.image.stem}_{tag}.png")
    outputs = [check_output_path(p, args.image) for p in (output, args.json) if p is not None]
    if len(set(outputs)) != len(outputs):
        raise InputError("the image output and --json name the same file")
    image = load_image(args.image)
    model = _load_model(args.model)
    synthesizer = Synthesizer(model, detector=args.detector, backend=args.backend)
    try:
        result = synthesizer(image, target, all_faces=args.all_faces, name=str(args.image))
    finally:
        synthesizer.close()
    for i in range(result.fit.batch_size):
        if not bool(result.fit.reliable[i]):
            log.warning("face %d: unreliable fit (%s)", i, "; ".join(result.fit.reasons[i]))
    save_image(output, result.image)
    if args.json is not None:
        faces = []
        for i, labels in enumerate(result.labels):
            rec = fit_record(result.fit, i, model)
            faces.append({"labels": labels, "fit": {k: rec[k] for k in ("pose_deg", "error", "reliable",
                                                                         "unreliable_reasons")}})
        save_json(args.json, {"image": str(args.image), "output": str(output), "model": model.name,
                              "rasterizer": result.rasterizer, "seed": args.seed, "faces": faces,
                              "timings_ms": result.timings_ms})
    print(f"wrote {output}" + (f" and {args.json}" if args.json else ""))
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

    p = sub.add_parser("render", help="re-render the face with a target expression, VA point or action units")
    p.add_argument("image", type=Path)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--expression", help="neutral, happiness, sadness, surprise, fear, anger, disgust, contempt, "
                                          "or a compound such as happiness+surprise")
    what.add_argument("--va", metavar="V,A", help="valence and arousal, each in [-1, 1]")
    what.add_argument("--au", metavar="SPEC", help="action units and intensities, e.g. 12:0.8,6:0.6 or 12R:0.5")
    p.add_argument("--intensity", type=float, help="with --expression: 0..1 (default 1)")
    p.add_argument("-o", "--output", type=Path, help="output image (default: IMAGE_<target>.png beside the input)")
    p.add_argument("--json", type=Path, help="also write the labels and fit metadata")
    p.add_argument("--seed", type=int, help="seed for the sampling of expression variants")
    p.add_argument("--model", type=Path, help="a model .npz (default: the embedded FACS model)")
    p.add_argument("--detector", choices=("mediapipe", "dlib"), default="mediapipe")
    p.add_argument("--backend", default="auto", help="rasteriser: auto, numba or moderngl")
    p.add_argument("--all-faces", action="store_true", help="render every face")
    p.set_defaults(func=cmd_render)
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
