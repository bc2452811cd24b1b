"""Where deid keeps the *records*: what names the inputs or shows their frames.

The records are the evaluation's tables and entries (``metrics/``: the original's path
beside each output), an archive's ``status.parquet`` (input path -> output, state,
errors) and the HTML report (frames of the originals). With ``io.output_names: input``
they go in the output folder, as the outputs themselves name the inputs anyway. With
``io.output_names: pseudonym`` the output folder is meant to be shared as it is
(outputs named after the input's hash, audit records without paths), so the records,
which map those names back to the inputs, go to a folder beside it,
``<out name>.records`` (made private, 0700, when deid creates it), or to the one the user
names (``--records`` / ``ray.records_dir``). A records folder, metrics folder or report
at or inside the output folder is then refused: it would put the inputs' names among
the files meant to be shared.
"""

from __future__ import annotations

import os
from pathlib import Path

from .archive import _inside, private_mkdir
from .errors import ConfigError

__all__ = ["RECORDS_SUFFIX", "records_folder", "check_outside_outputs", "make_records_folder"]

#: the default records folder under ``io.output_names: pseudonym``: ``<out>`` + this, beside it
RECORDS_SUFFIX = ".records"


def _resolved(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def records_folder(out_dir: str | os.PathLike, output_names: str, records: str | os.PathLike | None = None,
                   what: str = "the records folder (--records)") -> Path:
    """The records folder for outputs in ``out_dir``: ``records`` when given; else the
    output folder itself (``output_names == "input"``) or ``<out name>.records`` beside
    it (``"pseudonym"``). Under ``"pseudonym"`` a folder at or inside ``out_dir`` raises
    :class:`ConfigError`. Creates nothing."""
    o = _resolved(out_dir)
    if records:
        r = _resolved(records)
    elif output_names == "pseudonym":
        r = o.parent / f"{o.name}{RECORDS_SUFFIX}"
    else:
        r = o
    check_outside_outputs(r, o, output_names, what)
    if records and r.exists() and not r.is_dir():
        raise ConfigError(f"{what} {r} is a file; give the folder the records go to")
    return r


def check_outside_outputs(path: str | os.PathLike, out_dir: str | os.PathLike, output_names: str, what: str) -> None:
    """Under ``io.output_names: pseudonym``, refuse ``path`` (a folder or file holding
    records) at or inside the output folder."""
    if output_names != "pseudonym":
        return
    p, o = _resolved(path), _resolved(out_dir)
    if _inside(p, o):
        raise ConfigError(
            f"{what} {p} lies inside the output folder {o}: with io.output_names=pseudonym the output folder is "
            f"meant to be shared and must not hold what maps the outputs back to the inputs; leave it unset "
            f"(default {o.parent / (o.name + RECORDS_SUFFIX)}) or choose a folder outside {o}"
        )


def make_records_folder(path: str | os.PathLike, output_names: str) -> Path:
    """Create the records folder: private (0700, the folders deid creates) under
    ``"pseudonym"``, where it is the key from pseudonyms back to the inputs; a plain
    ``mkdir -p`` otherwise (it is the output folder or lies in it)."""
    p = Path(path)
    if output_names == "pseudonym":
        return private_mkdir(p)
    p.mkdir(parents=True, exist_ok=True)
    return p
