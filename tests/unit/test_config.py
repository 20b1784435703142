from __future__ import annotations

import configparser

import pytest

from nubes import config, exception, versions


def _load(tmp_path, text: str):
    path = tmp_path / "nubes.conf"
    path.write_text(text)
    conf = config.new_config()
    return config.load(["--config-file", str(path)], conf), path


def test_defaults_and_groups(tmp_path):
    conf, _ = _load(tmp_path, "[DEFAULT]\n")
    assert conf.transport_url == "memory://"
    assert conf.report_interval == 10
    assert conf.service_down_time == 60
    assert conf.database.connection == config.DEFAULT_DB_CONNECTION
    assert conf.database.replica_connection is None
    assert conf.conductor.workers == 1
    assert conf.scheduler.max_attempts == 3
    # A rolling upgrade needs no setting: every cap follows the oldest service running.
    assert [conf.upgrade_levels[api] for api in versions.APIS] == ["auto"] * 3


def test_values_are_read_and_later_files_win(tmp_path):
    first = tmp_path / "a.conf"
    second = tmp_path / "b.conf"
    first.write_text("[DEFAULT]\ntransport_url = rabbit://u:p@h:5672/\n[conductor]\nworkers = 4\n")
    second.write_text("[conductor]\nworkers = 8\n[scheduler]\nmax_attempts = 5\n")
    conf = config.load(
        ["--config-file", str(first), "--config-file", str(second)], config.new_config()
    )
    assert conf.transport_url == "rabbit://u:p@h:5672/"
    assert conf.conductor.workers == 8
    assert conf.scheduler.max_attempts == 5


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[DEFAULT]\nreport_interval = often\n", "[DEFAULT] report_interval"),
        ("[conductor]\nworkers = 0\n", "[conductor] workers"),
        ("[scheduler]\nmax_attempts = -1\n", "[scheduler] max_attempts"),
        ("[DEFAULT]\ndebug = maybe\n", "[DEFAULT] debug"),
    ],
)
def test_malformed_value_is_refused_naming_option_and_file(tmp_path, text, needle):
    with pytest.raises(exception.ConfigError) as info:
        _load(tmp_path, text)
    assert needle in info.value.message
    assert str(tmp_path / "nubes.conf") in info.value.message


def test_missing_or_unparsable_file_is_refused(tmp_path):
    with pytest.raises(exception.ConfigError, match="find"):
        config.load(["--config-file", str(tmp_path / "none.conf")], config.new_config())
    bad = tmp_path / "bad.conf"
    bad.write_text("[DEFAULT\n")
    with pytest.raises(exception.ConfigError, match="parse"):
        config.load(["--config-file", str(bad)], config.new_config())


def test_sample_lists_every_option_and_parses_back(tmp_path):
    text = config.sample()
    for group, opts in config.OPTION_GROUPS.items():
        assert f"[{group}]" in text
        for opt in opts:
            assert f"#{opt.dest} = " in text
    # Uncommenting the defaults gives a file that loads.
    uncommented = "\n".join(
        line[1:] if line.startswith("#") and " = " in line and "<" not in line else line
        for line in text.splitlines()
    )
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(uncommented)
    path = tmp_path / "sample.conf"
    path.write_text(uncommented)
    conf = config.load(["--config-file", str(path)], config.new_config())
    assert conf.report_interval == 10
