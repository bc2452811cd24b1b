import pytest

from deid.config import Config, config_hash, dump_config, load_config
from deid.errors import ConfigError


def test_defaults_are_valid_and_frozen():
    cfg = Config()
    assert cfg.io.keep_audio is False  # privacy default
    assert cfg.track.fail_closed == "redact"
    assert cfg.audit.leak_check is True
    with pytest.raises(Exception):
        cfg.io.crf = 3  # frozen


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("io:\n  crf: 18\ntrack:\n  max_gap: 4\nanonymize:\n  mask:\n    color: [255, 0, 0]\n")
    cfg = load_config(p, ["track.max_gap=6", "anonymize.blur.strength=0.2", "io.keep_audio=true"])
    assert cfg.io.crf == 18
    assert cfg.track.max_gap == 6
    assert cfg.anonymize.blur.strength == pytest.approx(0.2)
    assert cfg.anonymize.mask.color == (255, 0, 0)
    assert cfg.io.keep_audio is True


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("track.max_gapp=3", "unknown config key"),
        ("io.crf=99", "io.crf"),
        ("io.crf=abc", "io.crf"),
        ("track.fail_closed=ignore", "track.fail_closed"),
        ("audit.on_leak=ignore", "audit.on_leak"),
        ("audit.sample_per_minute=-1", "audit.sample_per_minute"),
        ("io.output_names=initials", "io.output_names"),
        ("nosection", "section.key=value"),
        ("io=3", "must be a mapping"),
    ],
)
def test_bad_values_are_clear_errors(override, fragment):
    with pytest.raises(ConfigError) as ei:
        load_config(None, [override])
    assert fragment in str(ei.value)


def test_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_hash_is_stable_and_sensitive():
    a, b = Config(), Config()
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(a.replace("io.crf=30"))
    assert config_hash(a, ["io"]) == config_hash(a.replace("track.max_gap=3"), ["io"])


def test_dump_roundtrip(tmp_path):
    cfg = Config().replace("track.max_gap=7")
    p = tmp_path / "d.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg


def test_shipped_configs_load(repo_root):
    files = sorted((repo_root / "configs").glob("*.yaml"))
    assert files, "configs/*.yaml missing"
    for f in files:
        if f.name.startswith("archive"):
            continue  # archive configs are checked by the Ray tests
        load_config(f)


def test_default_yaml_documents_every_setting_at_its_default(repo_root):
    """configs/default.yaml is the reference users read: every key of every section (nested
    ones too) is in it, and loading it changes nothing."""
    import dataclasses

    import yaml

    from deid.config import Config, load_config

    doc = yaml.safe_load((repo_root / "configs" / "default.yaml").read_text())

    def missing(obj, have, prefix):
        out = []
        for f in dataclasses.fields(obj):
            key = f"{prefix}{f.name}"
            if not isinstance(have, dict) or f.name not in have:
                out.append(key)
            elif dataclasses.is_dataclass(getattr(obj, f.name)):
                out += missing(getattr(obj, f.name), have[f.name], key + ".")
        return out

    assert missing(Config(), doc, "") == []
    assert load_config(repo_root / "configs" / "default.yaml") == Config()


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"# Station f\xfcr Endoskopie\nio:\n  crf: 22\n", "byte 0xfc on line 1"),  # cp1252 comment
        ("io:\n  crf: 22\n".encode("utf-16"), "UTF-16"),  # Notepad's "Unicode"
    ],
)
def test_a_config_that_is_not_utf8_is_a_config_error_naming_the_file(tmp_path, raw, fragment):
    p = tmp_path / "site.yaml"
    p.write_bytes(raw)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert f"config file {p} is not UTF-8 text" in str(ei.value) and fragment in str(ei.value)


def test_a_utf8_config_with_a_bom_loads(tmp_path):
    p = tmp_path / "site.yaml"
    p.write_bytes("\ufeff# Station für Endoskopie\nio:\n  crf: 22\n".encode("utf-8"))
    assert load_config(p).io.crf == 22


@pytest.mark.parametrize(
    "text, key, line",
    [
        ("io:\n  crf: 20\nio:\n  crf: 30\n", "'io'", 3),
        ("io:\n  crf: 20\n  preset: fast\n  crf: 30\n", "'crf'", 4),
    ],
)
def test_a_key_given_twice_is_a_config_error(tmp_path, text, key, line):
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert str(ei.value) == f"config file {p} gives key {key} twice (line {line}); keep one"


def test_a_yaml_syntax_error_is_one_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("track:\n  max_gap: [1, 2\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert "\n" not in str(ei.value) and f"config file {p} is not valid YAML" in str(ei.value)


def test_yaml_merge_keys_still_load_beside_the_duplicate_key_check(tmp_path):
    """`<<: *base` with a key beside it overriding the base's is YAML, not a key given twice."""
    import yaml

    from deid.config import _UniqueKeyLoader

    text = "_base: &base\n  crf: 30\n  preset: slow\nio:\n  <<: *base\n  preset: fast\n"
    assert yaml.load(text, Loader=_UniqueKeyLoader)["io"] == {"crf": 30, "preset": "fast"}
    with pytest.raises(Exception, match="io"):
        yaml.load("io: {crf: 30}\nio: {crf: 31}\n", Loader=_UniqueKeyLoader)


def test_a_switch_or_colour_that_is_not_what_it_looks_like_is_refused():
    """qa: io.keep_audio=2 became true and anonymize.mask.color=[1.7, 0, 0] became (1, 0, 0)."""
    for bad in ("io.keep_audio=2", "io.keep_audio=-1", "anonymize.mask.color=[1.7, 0, 0]",
                "anonymize.fixed_color=[0, true, 0]", "anonymize.mask.color=[0, 0]", "anonymize.mask.color=red"):
        with pytest.raises(ConfigError) as e:
            Config().replace(bad)
        assert bad.split("=")[0] in str(e.value), (bad, str(e.value))
    assert Config().replace("io.keep_audio=1").io.keep_audio is True
    assert Config().replace("anonymize.mask.color=[255.0, 0, 7]").anonymize.mask.color == (255, 0, 7)


@pytest.mark.parametrize("key", ["track.pose_min_score", "anonymize.blur.strength", "detect.min_score", "swap.max_minutes"])
@pytest.mark.parametrize("value", ["nan", ".nan", "inf", "-.inf"])
def test_a_number_that_is_not_finite_is_refused_for_every_key(key, value):
    """NaN fails every comparison (track.pose_min_score=nan counted no keypoint as seen): no
    setting of deid means it, so any float setting refuses it, naming the key."""
    with pytest.raises(ConfigError) as e:
        Config().replace(f"{key}={value}")
    assert key in str(e.value)


def test_a_huge_number_in_a_colour_is_a_config_error():
    with pytest.raises(ConfigError, match="anonymize.mask.color"):
        Config().replace("anonymize.mask.color=[1" + "0" * 320 + ", 0, 0]")
