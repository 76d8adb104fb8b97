"""Configuration: validation that names file and key, env overrides, check-config, sample."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from helios.control.heliosd import main as heliosd
from helios.daemon import config as config_mod
from helios.daemon.config import Config, ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_config_is_valid_and_is_the_default(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("HELIOS_CONFIG", raising=False)
    config = config_mod.load()
    assert config.sources.names == ["aws", "gcp", "azure"]
    assert "simulator" in config.sources.inputs
    assert [r.event_type for r in config.routes] == ["order.*", "payment.*", "bench.*"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[daemon]\ngrpc_adress = 'x'\n", "x.toml: daemon.grpc_adress: unknown key"),
        (
            "[daemon]\ngrpc_address = 'nope'\n",
            "x.toml: daemon.grpc_address: Value error, expected HOST:PORT",
        ),
        (
            "[reconcile]\nwindow_seconds = -1\n",
            "x.toml: reconcile.window_seconds: Input should be greater than 0",
        ),
        (
            "[[routes]]\nevent_type = 'a.*'\nsources = ['aws', 'ibm']\n",
            "routes[0].sources: ['ibm'] not in sources.names",
        ),
        ("[daemon]\nclock = 'sundial'\n", "daemon.clock: Input should be 'real' or 'simulated'"),
        ("[daemon\n", "x.toml: not valid TOML"),
        ("[sources]\nnames = ['a b']\n", "sources.names: Value error, source name 'a b'"),
    ],
)
def test_bad_configs_name_the_file_the_key_and_what_is_allowed(text, expected):
    with pytest.raises(ConfigError) as caught:
        config_mod.parse(text, "x.toml")
    assert expected in str(caught.value)


def test_environment_variables_override_keys():
    config = config_mod.parse(
        "[daemon]\ngrpc_address = '127.0.0.1:1'\n",
        "x.toml",
        {
            "HELIOS_DAEMON__GRPC_ADDRESS": "0.0.0.0:6000",
            "HELIOS_INDEX__TTL_SECONDS": "3600",
            "HELIOS_SOURCES__NAMES": '["a", "b"]',
            "HELIOS_PLUGINS": "not-an-override",
        },
    )
    assert config.daemon.grpc_address == "0.0.0.0:6000"
    assert config.index.ttl_seconds == 3600.0
    assert config.sources.names == ["a", "b"]


def test_a_bad_environment_override_is_reported_like_a_bad_file():
    with pytest.raises(ConfigError, match=r"index\.ttl_seconds"):
        config_mod.parse("", "x.toml", {"HELIOS_INDEX__TTL_SECONDS": "'soon'"})


def test_check_config_exits_non_zero_on_a_bad_file_and_starts_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[index]\nbackend = 'cassandra'\n")
    assert heliosd(["check-config", str(bad)]) == 2
    assert "index.backend: unknown index backend 'cassandra'" in capsys.readouterr().err
    bad.write_text("[sources.inputs.sim]\nplugin = 'simulator'\nrate_per_second = -5\n")
    assert heliosd(["check-config", str(bad)]) == 2
    assert "sources.inputs.sim: rate_per_second" in capsys.readouterr().err
    assert heliosd(["check-config", str(tmp_path / "absent.toml")]) == 2
    assert heliosd(["check-config", str(ROOT / "helios.toml")]) == 0
    assert "OK" in capsys.readouterr().out


def _keys(model: type, prefix: str = "") -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, config_mod.BaseModel):
            found |= _keys(annotation, f"{prefix}{name}.")
        else:
            found.add(f"{prefix}{name}")
    return found


def test_the_sample_config_is_valid_and_documents_every_key(capsys):
    assert heliosd(["config", "sample"]) == 0
    text = capsys.readouterr().out
    config_mod.parse(text, "sample.toml")
    data = tomllib.loads(text)
    for key in _keys(Config):
        node = data
        for part in key.split("."):
            if key.startswith("routes."):
                node = data["routes"][0]
                part = key.split(".")[-1]
            assert part in node, f"`heliosd config sample` does not mention {key}"
            node = node[part]


def test_without_any_config_file_heliosd_uses_the_built_in_defaults(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HELIOS_CONFIG", raising=False)
    config = config_mod.load(environ={"HELIOS_INDEX__TTL_SECONDS": "60"})
    assert config.daemon.grpc_address == "127.0.0.1:50051" and config.index.ttl_seconds == 60
    assert heliosd(["check-config"]) == 0
    assert "built-in defaults: OK" in capsys.readouterr().out
    # A file that is named must exist.
    assert heliosd(["-c", str(tmp_path / "named.toml"), "check-config"]) == 2


def test_bad_sqlite_index_options_are_named_by_check_config(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(
        f'[daemon]\ndata_dir = "{tmp_path / "data"}"\n'
        '[index]\noptions = { synchronous = "sometimes" }\n'
    )
    assert heliosd(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "index.options.synchronous must be full or normal, got 'sometimes'" in err
    assert not (tmp_path / "data").exists()
    config.write_text(
        f'[daemon]\ndata_dir = "{tmp_path / "data"}"\n[index]\noptions = {{ x = 1 }}\n'
    )
    assert heliosd(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "index.options: unknown keys ['x'] (sqlite: file, synchronous)" in err


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[reconcile]\nwindow_seconds = inf\n", "reconcile.window_seconds"),
        ("[decision]\ncycle_seconds = nan\n", "decision.cycle_seconds"),
        ("[daemon]\nclock_speed = inf\n", "daemon.clock_speed"),
        ('[ingest]\nmax_batch_events = "100"\n', "ingest.max_batch_events"),
        ("[ingest]\nmax_batch_events = true\n", "ingest.max_batch_events"),
        ("[ingest]\nmax_message_bytes = 99999999999\n", "ingest.max_message_bytes"),
    ],
)
def test_non_finite_coerced_and_impossible_values_are_refused_by_name(text: str, named: str):
    from helios.daemon import config as config_mod

    with pytest.raises(config_mod.ConfigError) as caught:
        config_mod.parse(text)
    assert named in str(caught.value)
