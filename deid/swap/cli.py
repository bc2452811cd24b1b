"""``deid swap train`` and ``deid donor add|list|check|pretrain``.

    deid donor add jane --video jane.mp4 --consent-by "Jane Doe" --expires 2027-01-31
    deid donor list
    deid donor check jane
    deid donor pretrain demo-carphone --minutes 10
    deid swap train --patient visit1.mp4 --donor jane --out /secure/models/p017
    deid anonymize visit1.mp4 --out out/ --method swap --set swap.model_dir=/secure/models/p017

``deid anonymize --method swap --donor NAME`` trains a model per video and deletes it
afterwards; ``deid swap train`` is for keeping a model on purpose (it is written with
mode 0700 and a warning: it can re-create the patient's face).
"""

from __future__ import annotations

import argparse

from ..commands import help_text


_SWAP_HELP = help_text("""``deid swap train``: train and keep a patient's face-swap model.

    deid swap train --patient visit1.mp4 --donor jane --out /secure/models/p017
    deid anonymize visit1.mp4 --out out/ --method swap --set swap.model_dir=/secure/models/p017

``deid anonymize --method swap --donor NAME`` trains a model per video and deletes it
afterwards; ``deid swap train`` is for keeping a model on purpose (it is written with
mode 0700 and a warning: it can re-create the patient's face).
""")

_DONOR_HELP = help_text("""``deid donor add|list|check|pretrain``: the consenting people whose face the swap puts on patients.

    deid donor add jane --video jane.mp4 --consent-by "Jane Doe" --expires 2027-01-31
    deid donor list
    deid donor check jane
    deid donor pretrain demo-carphone --minutes 10

Each donor has a consent record (who consented, scope, expiry); a swap with a donor whose
record is missing, revoked, expired or out of scope is refused before any patient data
is touched.
""")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..commands import add_config_args

    # --------------------------------------------------------------- swap
    sp = sub.add_parser("swap", help="train a per-patient face-swap model", description=_SWAP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = sp.add_subparsers(dest="swap_command", metavar="ACTION")
    t = ssub.add_parser("train", help="train the swap model for one patient against a donor")
    t.add_argument("--patient", nargs="+", required=True, metavar="VIDEO", help="the patient's video(s)")
    t.add_argument("--donor", required=True, help="donor name (`deid donor list`)")
    t.add_argument("--out", "-o", required=True, metavar="DIR", help="model folder (created with mode 0700)")
    t.add_argument("--minutes", type=float, help="training time budget (swap.max_minutes)")
    t.add_argument("--steps", type=int, help="training step budget (swap.max_steps)")
    t.add_argument("--preset", choices=("small", "large", "tiny"), help="model size (swap.preset)")
    t.add_argument("--resume", action="store_true", help="continue the training in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(t)
    t.set_defaults(func=run_swap_train)
    sp.set_defaults(func=_help(sp))

    # --------------------------------------------------------------- donor
    dp = sub.add_parser("donor", help="manage consenting face-swap donors", description=_DONOR_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = dp.add_subparsers(dest="donor_command", metavar="ACTION")
    a = dsub.add_parser("add", help="register a donor with a consent record")
    a.add_argument("name", help="donor name: lower-case letters, digits, '.', '_' or '-'")
    a.add_argument("--video", action="append", default=[], metavar="V", help="donor video (repeatable)")
    a.add_argument("--frames", action="append", default=[], metavar="DIR", help="folder of donor photos/frames (repeatable)")
    a.add_argument("--consent-by", required=True, metavar="WHO", help="who consented")
    a.add_argument("--expires", required=True, metavar="YYYY-MM-DD", help="consent expiry date")
    a.add_argument("--given", metavar="YYYY-MM-DD", help="when consent was given (default: today)")
    a.add_argument("--scope", default="face-swap-donor", help="comma-separated uses covered (must include face-swap-donor)")
    a.add_argument("--recorded-by", default="", help="who recorded the consent")
    a.add_argument("--notes", default="")
    a.add_argument("--link", action="store_true", help="symlink the media instead of copying it")
    a.add_argument("--overwrite", action="store_true", help="replace an existing donor of that name")
    a.add_argument("--pretrain-minutes", type=float, default=0.0, help="also pre-train the donor-only model for this long")
    a.add_argument("--no-face-check", action="store_true",
                   help="register without extracting the donor's faces now (a donor with too few usable faces then "
                        "fails at the first swap instead)")
    a.add_argument("--library", metavar="DIR", help="donor library (default $DEID_DONORS or ~/.deid/donors)")
    add_config_args(a)
    a.set_defaults(func=run_donor_add)
    ls = dsub.add_parser("list", help="list donors and the state of their consent")
    ls.add_argument("--library", metavar="DIR")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_donor_list)
    c = dsub.add_parser("check", help="check a donor's consent record (exit 1 if it would be refused)")
    c.add_argument("name")
    c.add_argument("--library", metavar="DIR")
    c.set_defaults(func=run_donor_check)
    pr = dsub.add_parser("pretrain", help="pre-train (or continue) the donor-only model that patient trainings start from")
    pr.add_argument("name")
    pr.add_argument("--minutes", type=float, default=10.0,
                    help="more training time (default 10); a run stopped early (Ctrl-C) keeps the steps it has done, "
                         "and the next call continues from them")
    pr.add_argument("--preset", choices=("small", "large", "tiny"), help="model size (swap.preset; default the config's)")
    pr.add_argument("--library", metavar="DIR", help="donor library (default $DEID_DONORS or ~/.deid/donors)")
    add_config_args(pr)
    pr.set_defaults(func=run_donor_pretrain)
    dp.set_defaults(func=_help(dp))


def _help(p: argparse.ArgumentParser):
    def run(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    return run


def _cfg(args: argparse.Namespace, extra: list[str]):
    """The config with ``--set`` overrides, then the command's own flags (validated once,
    so ``--set swap.max_minutes=0 --steps 5`` is a valid budget)."""
    from ..config import load_config

    return load_config(getattr(args, "config", None), list(getattr(args, "overrides", []) or []) + list(extra))


def run_swap_train(args: argparse.Namespace) -> int:
    import json
    import logging
    import os
    import sys
    from pathlib import Path

    from ..errors import InvalidInputError
    from .session import train_patient_model

    extra = [f"swap.donor={args.donor}"]
    if args.minutes is not None:
        extra.append(f"swap.max_minutes={args.minutes}")
    if args.steps is not None:
        extra.append(f"swap.max_steps={args.steps}")
    if args.preset:
        extra.append(f"swap.preset={args.preset}")
    cfg = _cfg(args, extra)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise InvalidInputError(f"{out} is not empty; choose a new folder or pass --resume to continue its training")
    for v in args.patient:
        if out.resolve() == Path(v).resolve().parent:
            raise InvalidInputError(f"--out {out} is the folder of the patient video; keep models apart from media")
    from .donors import DonorLibrary

    DonorLibrary(cfg.swap.donor_library or None).get(cfg.swap.donor)  # a refused consent leaves no (empty) model folder
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    from ..registry import IDENTITY_ENCODERS

    identity = IDENTITY_ENCODERS.create(cfg.audit.identity_backend)
    info = train_patient_model(args.patient, cfg, out, identity=identity, progress=not args.no_progress and sys.stderr.isatty(), resume=args.resume)
    logging.getLogger(__name__).warning(
        "%s holds a model that can re-create the patient's face, their aligned face crops and reference embeddings: "
        "keep it private and delete it when done", out
    )
    print(json.dumps(info, indent=1))
    print(f"use it: deid anonymize VIDEO --out DIR --method swap --set swap.model_dir={out}")
    return 0


def run_donor_add(args: argparse.Namespace) -> int:
    import datetime as dt

    from ..errors import ConsentError, InvalidInputError
    from .donors import REQUIRED_SCOPE, Consent, DonorLibrary

    media = list(args.video) + list(args.frames)
    if not media:
        raise InvalidInputError("give the donor's material with --video V and/or --frames DIR")
    scope = [s.strip() for s in args.scope.split(",") if s.strip()]
    if REQUIRED_SCOPE not in scope:  # a consent is recorded as given, never widened
        raise ConsentError(f"--scope {args.scope!r} does not include {REQUIRED_SCOPE}: the donor's consent must cover being a "
                           f"face-swap donor (e.g. --scope {REQUIRED_SCOPE},{','.join(scope) or 'research'})")
    import yaml

    def day(v: str, opt: str) -> str:
        try:
            return dt.date.fromisoformat(v.strip()).isoformat()
        except ValueError:
            raise ConsentError(f"{opt} {v!r}: a date that does not exist, or not written YYYY-MM-DD") from None

    # every value is dumped as YAML data, never pasted into YAML text: a value with a newline
    # or a bracket cannot add keys (an 'expires: never', a second scope) to the record
    text = "version: 1\nkind: person\n" + yaml.safe_dump({
        "who": args.consent_by or "",
        "given": day(args.given, "--given") if args.given else dt.date.today().isoformat(),
        "scope": scope,
        "expires": day(args.expires, "--expires"),
        "recorded_by": args.recorded_by or "",
        "notes": args.notes or "",
    }, sort_keys=False, allow_unicode=True)
    lib = DonorLibrary(args.library)
    consent = Consent.parse(text, f"consent for {args.name}")
    faces: list[int] = []
    cfg = _cfg(args, [])

    def check_faces(d) -> None:
        from .donors import check_donor_faces

        faces.append(check_donor_faces(d, cfg))

    # nothing half-registered: a donor that cannot be used is not listed, and one it was to
    # replace (--overwrite) stays as it was
    donor = lib.add(args.name, media, consent, link=args.link, overwrite=args.overwrite,
                    check=None if args.no_face_check else check_faces)
    if faces:
        print(f"donor {donor.name}: {faces[0]} usable faces (extracted and cached for training)")
    print(f"added donor {donor.name}: {len(donor.media)} file(s), consent by {consent.who} until {consent.expires}")
    if args.pretrain_minutes > 0:
        from .pretrain import pretrain_donor

        p = pretrain_donor(donor, _cfg(args, []), minutes=args.pretrain_minutes)
        print(f"pre-trained: {p}")
    return 0


def run_donor_list(args: argparse.Namespace) -> int:
    import json

    from .donors import DonorLibrary

    lib = DonorLibrary(args.library)
    rows = [lib.status(n) for n in lib.names()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"donor library: {lib.root}")
    for r in rows:
        print(f"  {r['name']:<20} {r['status']:<10} expires {r['expires'] or '-':<10} media {r['media']:<3} {r['kind']:<21} {r['who']}")
    return 0


def run_donor_check(args: argparse.Namespace) -> int:
    from .donors import DonorLibrary

    donor = DonorLibrary(args.library).get(args.name)
    c = donor.consent
    print(f"{donor.name}: ok — {c.kind}, consent by {c.who}, scope {', '.join(c.scope)}, expires {c.expires or 'never'}, {len(donor.media)} media file(s)")
    return 0


def run_donor_pretrain(args: argparse.Namespace) -> int:
    from .donors import DonorLibrary
    from .pretrain import pretrain_donor

    cfg = _cfg(args, [f"swap.preset={args.preset}"] if args.preset else [])
    donor = DonorLibrary(args.library).get(args.name)
    print(pretrain_donor(donor, cfg, minutes=args.minutes, progress=True))
    return 0
