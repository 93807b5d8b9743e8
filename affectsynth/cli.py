"""Command-line interface (thin: every stage lives in its own module).

    affectsynth example OUT.png                 write the bundled example photo
    affectsynth fit IMAGE -o fit.json [--overlay overlay.png] [--model model.npz] [--all-faces] [--device D]
    affectsynth render IMAGE (--expression NAME [--intensity I] | --va V,A | --au 12:0.8,6:0.6)
                       [-o OUT.png] [--json meta.json] [--seed N] [--affect affect.npz] [--model model.npz] ...
    affectsynth render IMAGE --va-path "0,0;0.6,0.4;0.8,-0.2" [--frames 48] [-o clip.mp4|clip.gif|frames/]
                       [--fps 24] [--json meta.json] ...
    affectsynth sheet IMAGE -o sheet.png [--targets happiness va:0.5,0.7 au:12:0.8 ...] [--json meta.json] ...
    affectsynth batch INPUT -o OUT --targets SPEC [--workers N] [--executor local|ray] [--format files|webdataset]
                       [--seed N] [--class-codes DATASET] [--fit-cache DIR] [--model model.npz] [--detector D] [--backend B]
    affectsynth model import ict PATH -o model.npz   import the ICT Face Model Light of an ICT-FaceKit clone
    affectsynth model import sfm PATH -o model.npz   the Surrey Face Model (eos's share/ or sfm_shape_3448.bin)
    affectsynth model import bfm2009|bfm2017 FILE -o model.npz   the Basel Face Model (.mat / .h5)
    affectsynth model import flame FILE [--landmarks EMBEDDING] -o model.npz   FLAME (.pkl)
    affectsynth model info model.npz                  counts, expressions, landmarks, regions, provenance
    affectsynth model build-affect --meshes DIR [--labels labels.csv] --base model.npz -o affect.npz
                       [--layout flat|4dfab|bu4dfe|coma] [--unit-mm S] [--vertex-map FILE] [--bins N] [--jobs N]

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


#: Most frames a --va-path clip may have (the frame files' names sort correctly up to 10,000).
MAX_FRAMES = 10_000
#: Targets of ``affectsynth sheet`` when none are given: neutral and the six basic expressions.
SHEET_TARGETS = ("neutral", "happiness", "sadness", "surprise", "fear", "anger", "disgust")


def _load_model(path: Path | None, device: str = "cpu"):
    """The model on the device asked for (InputError when that device is not there)."""
    from .model import FaceModel, load_default_model
    from .pipeline import resolve_device

    device = resolve_device(device)
    return load_default_model(device) if path is None else FaceModel.load(path, device=device)


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
    model = _load_model(args.model, args.device)
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


def _generator(seed: int | None):
    import torch

    return None if seed is None else torch.Generator().manual_seed(seed)


def _affect_model(args: argparse.Namespace):
    """The ``--affect`` model, or None."""
    from .affect.affect_model import AffectModel

    return None if args.affect is None else AffectModel.load(args.affect)


def _target(args: argparse.Namespace):
    """The ExpressionCode asked for on the command line, and a file-name tag for it."""
    from .affect.bank import VABank, target_from_va
    from .affect.targets import parse_au, parse_expression, parse_va

    generator = _generator(args.seed)
    affect = _affect_model(args)
    if args.expression is not None:
        intensity = 1.0 if args.intensity is None else args.intensity
        code = parse_expression(args.expression, intensity, generator=generator) if affect is None else \
            affect.expression(args.expression, intensity)
        tag = "+".join(sorted(code.soft_label or [code.category or "expression"])) + \
            ("" if intensity == 1.0 else f"_{intensity:.2f}")
    elif args.va is not None:
        valence, arousal = parse_va(args.va)
        bank = VABank.default() if affect is None else affect.require_bank()
        code = target_from_va(valence, arousal, bank, generator=generator)
        tag = f"va{valence:+.2f}{arousal:+.2f}"
    else:
        if affect is not None:
            raise InputError("--affect goes with --expression, --va or --va-path, not --au")
        code = parse_au(args.au)
        tag = "au" + "_".join(f"{k.removeprefix('AU')}-{v:.2f}" for k, v in sorted(code.au.items()))
    return code, tag


def _fit_summary(fit, i: int, model) -> dict:
    """Face i's pose, fitting error and reliability, for the JSON of render and sheet."""
    from .fit import fit_record

    record = fit_record(fit, i, model)
    return {k: record[k] for k in ("pose_deg", "error", "reliable", "unreliable_reasons")}


def _warn_unreliable(fit) -> None:
    for i in range(fit.batch_size):
        if not bool(fit.reliable[i]):
            log.warning("face %d: unreliable fit (%s)", i, "; ".join(fit.reasons[i]))


def _check_json_path(json_path: Path | None, output: Path, image: Path) -> None:
    from .io import check_output_path

    if json_path is not None and check_output_path(json_path, image) == output:
        raise InputError("the output and --json name the same file")


def cmd_render(args: argparse.Namespace) -> int:
    from .io import check_output_path, load_image, save_image, save_json
    from .pipeline import Synthesizer

    if args.intensity is not None and args.expression is None:
        raise InputError("--intensity goes with --expression")
    if args.va_path is not None:
        return _render_va_path(args)
    for name in ("frames", "fps"):
        if getattr(args, name) is not None:
            raise InputError(f"--{name} goes with --va-path")
    target, tag = _target(args)
    shown = args.output or args.image.with_name(f"{args.image.stem}_{tag}.png")
    output = check_output_path(shown, args.image)
    _check_json_path(args.json, output, args.image)
    image = load_image(args.image)
    model = _load_model(args.model, args.device)
    with Synthesizer(model, detector=args.detector, backend=args.backend) as synthesizer:
        result = synthesizer(image, target, all_faces=args.all_faces, name=str(args.image))
    _warn_unreliable(result.fit)
    save_image(output, result.image)
    if args.json is not None:
        faces = [{"labels": labels, "fit": _fit_summary(result.fit, i, model)}
                 for i, labels in enumerate(result.labels)]
        save_json(args.json, {"image": str(args.image), "output": str(shown), "model": model.name,
                              "device": str(model.device), "rasterizer": result.rasterizer, "seed": args.seed,
                              "faces": faces, "timings_ms": result.timings_ms})
    print(f"wrote {shown}" + (f" and {args.json}" if args.json else ""))
    return 0


def _render_va_path(args: argparse.Namespace) -> int:
    """``render --va-path``: one fit, one render per frame along the path, streamed to the clip."""
    import statistics

    from .affect.targets import parse_va
    from .io import FRAME_NAME, check_frames_output, load_image, save_frames, save_json
    from .pipeline import Synthesizer, va_path_targets

    frames = 48 if args.frames is None else args.frames
    if not 2 <= frames <= MAX_FRAMES:
        raise InputError(f"--frames {frames}: a VA path has 2 to {MAX_FRAMES} frames")
    points = [parse_va(point) for point in args.va_path.split(";")]  # the errors of --va, per point
    affect = _affect_model(args)
    targets = va_path_targets(points, frames, None if affect is None else affect.require_bank(), args.seed)
    output_text = args.output or str(args.image.with_name(f"{args.image.stem}_vapath.mp4"))
    output, kind = check_frames_output(output_text, args.image)
    if kind == "dir" and args.fps is not None:
        raise InputError("--fps goes with an .mp4 or .gif output, not a directory of frames")
    fps = 24.0 if args.fps is None else args.fps
    _check_json_path(args.json, output, args.image)
    image = load_image(args.image)
    model = _load_model(args.model, args.device)
    frame_labels, render_ms, first = [], [], None

    def frame_images():  # keeps labels and timings, not the frames (they stream to the file)
        nonlocal first
        for result in renders:
            first = first or result
            frame_labels.append(result.labels[0])
            render_ms.append(result.timings_ms["deform"] + result.timings_ms["render_composite"])
            yield result.image

    with Synthesizer(model, detector=args.detector, backend=args.backend) as synthesizer:
        renders = synthesizer.render_many(image, targets, all_faces=args.all_faces, name=str(args.image))
        count = save_frames(output, frame_images(), fps)
    _warn_unreliable(first.fit)
    if args.json is not None:
        per_frame = [{"index": i, **({"file": FRAME_NAME.format(i)} if kind == "dir" else {}), "labels": labels}
                     for i, labels in enumerate(frame_labels)]
        save_json(args.json, {
            "image": str(args.image), "output": output_text, "kind": kind, "model": model.name,
            "device": str(model.device), "rasterizer": first.rasterizer, "seed": args.seed,
            "va_path": [list(p) for p in points],
            "frames": count, "fps": None if kind == "dir" else fps,
            "faces": [{"fit": _fit_summary(first.fit, i, model)} for i in range(first.fit.batch_size)],
            "frame_labels": per_frame,
            "timings_ms": {"detect_fit": first.timings_ms["detect_fit"],
                           "render_per_frame_median": statistics.median(render_ms), "render_total": sum(render_ms)}})
    print(f"wrote {count} frames to {output_text}" + (f" and {args.json}" if args.json else ""))
    return 0


def _face_box(results, shape: tuple[int, ...], margin: float = 0.15) -> tuple[int, int, int, int]:
    """A square crop (x0, y0, x1, y1) around every face before and after (landmark boxes and where
    any render was composited), grown by ``margin`` of its side and kept inside the image."""
    import numpy as np

    height, width = shape[:2]
    boxes = results[0].landmarks.box.cpu().numpy()
    x0, y0 = boxes[:, :2].min(0)
    x1, y1 = boxes[:, 2:].max(0)
    for result in results:
        ys, xs = np.nonzero(result.mask > 0)
        if len(xs):
            x0, y0, x1, y1 = min(x0, xs.min()), min(y0, ys.min()), max(x1, xs.max() + 1), max(y1, ys.max() + 1)
    side = min(max(x1 - x0, y1 - y0) * (1 + 2 * margin), width, height)
    left = int(round(min(max((x0 + x1 - side) / 2, 0), width - side)))
    top = int(round(min(max((y0 + y1 - side) / 2, 0), height - side)))
    side = int(side)
    return left, top, left + side, top + side


def cmd_sheet(args: argparse.Namespace) -> int:
    from .draw import contact_sheet
    from .io import check_output_path, load_image, save_image, save_json
    from .pipeline import Synthesizer, parse_target

    if not 32 <= args.tile <= 2048:
        raise InputError(f"--tile {args.tile}: give a tile height of 32 to 2048 pixels")
    specs = args.targets or SHEET_TARGETS
    generator = _generator(args.seed)
    targets = [parse_target(spec, generator) for spec in specs]
    output = check_output_path(args.output, args.image)
    _check_json_path(args.json, output, args.image)
    image = load_image(args.image)
    model = _load_model(args.model, args.device)
    with Synthesizer(model, detector=args.detector, backend=args.backend) as synthesizer:
        results = list(synthesizer.render_many(image, targets, all_faces=args.all_faces, name=str(args.image)))
    _warn_unreliable(results[0].fit)
    captions = ["input"] + [spec if not spec.lower().startswith("va:") else f"{spec} ({target.category})"
                            for spec, target in zip(specs, targets)]
    sheet = contact_sheet([image] + [r.image for r in results], captions, _face_box(results, image.shape),
                          tile=args.tile)
    save_image(output, sheet)
    if args.json is not None:
        fit = results[0].fit
        save_json(args.json, {
            "image": str(args.image), "output": str(args.output), "model": model.name, "device": str(model.device),
            "rasterizer": results[0].rasterizer, "seed": args.seed,
            "faces": [{"fit": _fit_summary(fit, i, model)} for i in range(fit.batch_size)],
            "tiles": [{"target": spec, "labels": r.labels} for spec, r in zip(specs, results)]})
    print(f"wrote {args.output} ({len(results)} targets)" + (f" and {args.json}" if args.json else ""))
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import MANIFEST_NAME, BatchOptions, run_batch

    summary = run_batch(BatchOptions(
        input=args.input, output=args.output, targets=args.targets, workers=args.workers, executor=args.executor,
        format=args.format, seed=args.seed, model=args.model, detector=args.detector, backend=args.backend,
        fit_cache=args.fit_cache, progress=not args.no_progress, class_codes=args.class_codes))
    done = summary.ok + summary.failed
    print(f"batch: {summary.planned} items: {summary.skipped} already done, {summary.ok} rendered, "
          f"{summary.failed} failed ({summary.failed / max(done, 1):.1%} of this run) in {summary.seconds:.1f} s "
          f"({summary.images_per_second:.2f} img/s); manifest {args.output / MANIFEST_NAME}"
          + (f", {summary.shards} shards" if args.format == "webdataset" else ""))
    for reason, count in sorted(summary.reasons.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  failed x{count}: {reason}")
    return 3 if summary.failed else 0


#: Model importers by the name ``affectsynth model import`` takes: (function of
#: affectsynth.model.importers, what PATH is).
MODEL_IMPORTERS = {
    "ict": ("import_ict", "a clone of ICT-FaceKit (a folder with FaceXModel/)"),
    "sfm": ("import_sfm", "the Surrey Face Model: eos's share/ folder or sfm_shape_3448.bin"),
    "bfm2009": ("import_bfm2009", "BFM 2009's 01_MorphableModel.mat"),
    "bfm2017": ("import_bfm2017", "a BFM 2017 .h5 (model2017-1_bfm_nomouth.h5, ..._face12_nomouth.h5)"),
    "flame": ("import_flame", "a FLAME .pkl (generic_model.pkl, flame2023.pkl)"),
}


def cmd_model_import(args: argparse.Namespace) -> int:
    from .io import check_output_path
    from .model import importers

    inputs = [args.path] + ([args.landmarks] if args.landmarks is not None else [])
    output = check_output_path(args.output, *inputs)
    if args.landmarks is not None and args.format != "flame":
        raise InputError("--landmarks goes with flame")
    importer = getattr(importers, MODEL_IMPORTERS[args.format][0])
    model = importer(args.path, **({"landmarks": args.landmarks} if args.landmarks is not None else {}))
    model.save(output)
    print(f"wrote {args.output} ({model.name}: {model.num_vertices} vertices, {model.num_identity} identity modes, "
          f"{model.num_expressions} expressions)")
    return 0


def cmd_model_build_affect(args: argparse.Namespace) -> int:
    from .affect.build import BuildOptions, build_affect
    from .io import check_output_path

    output = check_output_path(args.output, *[p for p in (args.labels, args.base, args.vertex_map) if p is not None])
    if args.jobs < 1 or args.bins < 1:
        raise InputError("--jobs and --bins must be at least 1")
    if args.unit_mm is not None and not args.unit_mm > 0:
        raise InputError(f"--unit-mm {args.unit_mm}: give the millimetres per mesh unit, a positive number")
    options = BuildOptions(layout=args.layout, unit_mm=args.unit_mm, vertex_map=args.vertex_map, bins=args.bins,
                           jobs=args.jobs)
    affect, report = build_affect(args.meshes, args.labels, args.base, options)
    affect.save(output)
    residual = affect.provenance["residual"]
    bank = affect.bank
    print(f"wrote {args.output}: {report.sequences_built}/{report.sequences_found} sequences "
          f"({len(report.failures)} skipped), {report.frames} frames in {report.seconds:.1f} s "
          f"({report.frames_per_second:.0f} frames/s); residual mean {residual['mean_mm']:.3f} mm, "
          f"p95 {residual['p95_mm']:.3f} mm")
    print("  class prototypes: " + (", ".join(f"{c} ({n} people)" for c, n in zip(affect.classes, affect.prototype_people))
                                    or "none (no categorical labels)"))
    if bank is None:
        print("  VA bank: none (no valence-arousal labels)")
    else:
        print(f"  VA bank: {len(bank)} exemplars kept of {affect.provenance['va_exemplars_seen']}; coverage: "
              + affect.coverage_summary())
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    from .affect.targets import model_emotion_keys
    from .model import FaceModel

    model = FaceModel.load(args.model)
    meta = model.meta
    au_map = meta.get("au_map", {})
    emotions = model_emotion_keys(model)
    lines = [
        f"{args.model}: {model.name} ({meta.get('version', 'no version')}), units {meta.get('units', '?')}",
        f"  vertices {model.num_vertices}, triangles {model.triangles.shape[0]}, identity modes {model.num_identity}, "
        f"expressions {model.num_expressions}, uv {'yes' if model.uv is not None else 'no'}",
        "  expressions: " + ", ".join(f"{n}={au_map[n]}" if n in au_map else f"{n}={e}" if e not in (None, n) else n
                                      for n, e in zip(model.exp_names, emotions)),
        *(["  expressions are emotion-driven: each takes its emotion's share of an --expression or --va target "
           "times the intensity; --au targets cannot drive them"] if any(emotions) else []),
        "  landmark schemes: " + (", ".join(f"{k} ({int(m.valid.sum())}/{len(m.valid)} points)"
                                          for k, m in model.landmark_maps.items()) or "none"),
        "  regions: " + (", ".join(f"{k} ({len(r)})" for k, r in model.regions.items()) or "none"),
        "  materials (triangles): " + (", ".join(f"{k} ({len(r)})" for k, r in model.materials.items())
                                       or "none: all skin"),
    ]
    for key in ("source", "licence", "provenance", "what_it_is", "what_it_is_not"):
        if key in meta:
            lines.append(f"  {key}: {meta[key]}")
    print("\n".join(lines))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other error (it would print the usage too)."""

    def error(self, message: str):
        self.exit(2, f"affectsynth: error: {self.prog}: {message} (see {self.prog} --help)\n")


#: Options whose values may start with "-" (a negative valence): argparse would take such a value
#: for an option unless it is attached as --va=-0.5,0.3, which :func:`main` does.
_SIGNED_VALUE_OPTIONS = ("--va", "--va-path")


def _attach_signed_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _SIGNED_VALUE_OPTIONS and arg[:2] in {f"-{c}" for c in "0123456789."}:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="affectsynth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("example", help="write the bundled example photo (scikit-image's astronaut)")
    p.add_argument("output", type=Path)
    p.set_defaults(func=cmd_example)

    p = sub.add_parser("fit", help="detect the face and fit the 3D face model to it")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="fit result, JSON")
    p.add_argument("--overlay", type=Path, help="also draw the fitted mesh over the photo (PNG/JPEG)")
    _add_model_options(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("render", help="re-render the face with a target expression, VA point or action units, "
                                      "or a clip along a path in VA space")
    p.add_argument("image", type=Path)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--expression", help="neutral, happiness, sadness, surprise, fear, anger, disgust, contempt, "
                                          "or a compound such as happiness+surprise")
    what.add_argument("--va", metavar="V,A", help="valence and arousal, each in [-1, 1]")
    what.add_argument("--au", metavar="SPEC", help="action units and intensities, e.g. 12:0.8,6:0.6 or 12R:0.5")
    what.add_argument("--va-path", metavar="V,A;V,A;...",
                      help="a clip along this polyline in VA space, at constant speed (at least two points)")
    p.add_argument("--intensity", type=float, help="with --expression: 0..1 (default 1)")
    p.add_argument("--frames", type=int, help="with --va-path: number of frames (default 48)")
    p.add_argument("--fps", type=float, help="with --va-path to .mp4/.gif: frames per second (default 24)")
    p.add_argument("-o", "--output",
                   help="output image (default: IMAGE_<target>.png beside the input); with --va-path a .mp4, "
                        ".gif or directory/ of PNG frames (default: IMAGE_vapath.mp4)")
    p.add_argument("--json", type=Path, help="also write the labels (per frame with --va-path) and fit metadata")
    p.add_argument("--seed", type=int, help="seed for the sampling of expression variants")
    p.add_argument("--affect", type=Path, help="an affect model from 'model build-affect': its VA bank for --va and "
                                               "--va-path, its class prototypes for --expression")
    _add_model_options(p, render=True)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("sheet", help="render several targets and write a labelled contact sheet (input | targets)")
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="the contact sheet image (PNG/JPEG)")
    p.add_argument("--targets", nargs="+", metavar="TARGET",
                   help="expressions (happiness, fear@0.5, happiness+surprise), va:V,A or au:SPEC "
                        f"(default: {' '.join(SHEET_TARGETS)})")
    p.add_argument("--tile", type=int, default=256, help="tile height in pixels (default 256)")
    p.add_argument("--json", type=Path, help="also write each tile's labels and the fit metadata")
    p.add_argument("--seed", type=int, help="seed for the sampling of expression variants")
    _add_model_options(p, render=True)
    p.set_defaults(func=cmd_sheet)

    p = sub.add_parser("batch", help="render many photos x many targets to files (or webdataset shards) and a "
                                     "manifest; resumable")
    p.add_argument("input", type=Path, help="a folder of images (recursive) or a CSV: path[,label,valence,arousal,"
                                            "subject], paths relative to its folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (OUT/<source>/<target>.png, "
                                                                   "OUT/manifest.csv)")
    p.add_argument("--targets", required=True, metavar="SPEC",
                   help="';'-joined: expressions=all|NAME,NAME...; va-grid=NxM; va-random=K; balance=label")
    p.add_argument("--workers", type=int, default=1, help="worker processes or Ray actors (default 1)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local processes, or Ray (RAY_ADDRESS=... for a cluster; pip install 'affectsynth[ray]')")
    p.add_argument("--format", choices=("files", "webdataset"), default="files",
                   help="files, or also webdataset .tar shards in OUT/shards/ (default files)")
    p.add_argument("--seed", type=int, default=0, help="global seed; each item's seed derives from it (default 0)")
    p.add_argument("--class-codes", metavar="DATASET|NAMES",
                   help="read numbered labels (class folders such as RAF-DB's 1/ ... 7/, a CSV's label column) in "
                        "this order: affectnet, fer2013, rafdb, ckplus, or names comma-separated from code 0")
    p.add_argument("--fit-cache", type=Path, help="fit cache folder, to share between jobs (default OUT/.fitcache)")
    p.add_argument("--model", type=Path, help="a model .npz (default: the embedded FACS model)")
    p.add_argument("--detector", choices=("mediapipe", "dlib"), default="mediapipe")
    p.add_argument("--backend", default="auto", help="rasteriser: auto, numba, moderngl or nvdiffrast (CUDA)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("model", help="import a public face model, or describe a model file")
    model_sub = p.add_subparsers(dest="model_command", required=True)
    q = model_sub.add_parser("import", help="import a public 3DMM into a model .npz")
    q.add_argument("format", choices=MODEL_IMPORTERS,
                   help="; ".join(f"{k}: {what}" for k, (_, what) in MODEL_IMPORTERS.items())
                   + " (bfm2009, bfm2017 and flame are untested on the real files)")
    q.add_argument("path", type=Path)
    q.add_argument("-o", "--output", type=Path, required=True)
    q.add_argument("--landmarks", type=Path, help="flame: a landmark embedding (flame_static_embedding.pkl, "
                                                  "landmark_embedding.npy or mediapipe_landmark_embedding.npz)")
    q.set_defaults(func=cmd_model_import)
    q = model_sub.add_parser("info", help="counts, expressions, landmark schemes, regions, materials, provenance")
    q.add_argument("model", type=Path)
    q.set_defaults(func=cmd_model_info)
    q = model_sub.add_parser("build-affect", help="build the expression and affect model (class prototypes, VA bank) "
                                                  "from 4D expression meshes in the base model's topology")
    q.add_argument("--meshes", type=Path, required=True, help="a folder of sequence folders (see --layout)")
    q.add_argument("--labels", type=Path, help="labels.csv: sequence, frame, category, valence, arousal, person "
                                               "(optional for the dataset layouts, whose folders name the expression)")
    q.add_argument("--base", type=Path, required=True, help="the base model .npz whose blendshapes are fitted")
    q.add_argument("-o", "--output", type=Path, required=True, help="affect.npz")
    q.add_argument("--layout", choices=("flat", "4dfab", "bu4dfe", "coma"), default="flat",
                   help="flat: DIR/<sequence>/; 4dfab: DIR/<subject>/<session>/<expression>/; bu4dfe and coma: "
                        "DIR/<subject>/<expression>/ (the dataset readers are untested on real data)")
    q.add_argument("--unit-mm", type=float, help="millimetres per mesh unit (default 1; coma: 1000)")
    q.add_argument("--vertex-map", type=Path, help="for meshes in another topology: per base vertex, the index of "
                                                   "a source vertex (text or .npy); raw scans are not supported")
    q.add_argument("--bins", type=int, default=20, help="VA grid cells per axis for thinning and coverage (default 20)")
    q.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    q.set_defaults(func=cmd_model_build_affect)
    return ap


def _add_model_options(p: argparse.ArgumentParser, render: bool = False) -> None:
    p.add_argument("--model", type=Path, help="a model .npz (default: the embedded FACS model)")
    p.add_argument("--detector", choices=("mediapipe", "dlib"), default="mediapipe")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: cuda where CUDA and a CUDA "
                                                  "rasteriser are there, else cpu); cuda without CUDA is an error")
    if render:
        p.add_argument("--backend", default="auto", help="rasteriser: auto, numba, moderngl or nvdiffrast (CUDA)")
    p.add_argument("--all-faces", action="store_true",
                   help="every face (default: the single dominant face; similar-sized faces are an error)")


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
    own_process = argv is None  # the console script, not a caller's interpreter
    args = build_parser().parse_args(_attach_signed_values(sys.argv[1:] if argv is None else list(argv)))
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
