"""The same batch job through ``--executor local`` and ``--executor ray`` (a local Ray, 2 CPUs):
the manifests must be identical (timings aside) and so must the images' bytes.

    python scripts/batch_ray_vs_local.py [--count 200] [--workers 2] [--keep DIR]

The job: ``--count / 8`` source photos (variants of the astronaut and the dev photos, as
scripts/batch_kill_resume.py makes them) x ``expressions=all``. Each executor runs from a cold
fit cache. The last line is key=value figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from batch_kill_resume import TARGETS, TARGETS_PER_SOURCE, manifest_rows, verify, write_sources  # noqa: E402
from benchlib import cpu_name  # noqa: E402

from affectsynth.batch import TIMING_COLUMNS, BatchOptions, run_batch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--keep", type=Path, help="work in this new folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    import ray

    work = args.keep or Path(tempfile.mkdtemp(prefix="affectsynth_ray_"))
    write_sources(work / "in", args.count // TARGETS_PER_SOURCE, args.side, seed=0)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    seconds, rows = {}, {}
    for executor in ("local", "ray"):
        out = work / f"out_{executor}"
        start = time.perf_counter()
        run_batch(BatchOptions(input=work / "in", output=out, targets=TARGETS, workers=args.workers,
                               executor=executor, progress=False))
        seconds[executor] = time.perf_counter() - start
        verify(work / "in", out)
        rows[executor] = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in manifest_rows(out)]
    same_rows = rows["local"] == rows["ray"]
    same_bytes = all((work / "out_local" / r["output"]).read_bytes() == (work / "out_ray" / r["output"]).read_bytes()
                     for r in rows["local"] if r["output"])
    print(f"{cpu_name()}; {len(rows['local'])} items; local {seconds['local']:.0f} s, ray {seconds['ray']:.0f} s; "
          f"same manifest: {same_rows}, same bytes: {same_bytes}")
    print(f"images={len(rows['local'])} ok={sum(r['status'] == 'ok' for r in rows['local'])} "
          f"same_manifest={int(same_rows)} same_bytes={int(same_bytes)} seconds_local={seconds['local']:.1f} "
          f"seconds_ray={seconds['ray']:.1f}")
    return 0 if same_rows and same_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
